#include "common/error_details.h"

#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace lensgrid {
namespace {

constexpr char kInfoUrl[] = "lensgrid/error_info+json";
constexpr char kFieldsUrl[] = "lensgrid/field_violations+json";
constexpr char kQuotaUrl[] = "lensgrid/quota_violations+json";

// `text` cut to kMaxDetailBytes, never inside a UTF-8 sequence.
std::string Cut(const std::string& text) {
  if (text.size() <= kMaxDetailBytes) return text;
  size_t cut = kMaxDetailBytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return text.substr(0, cut) + "\xE2\x80\xA6";
}

std::optional<nlohmann::json> Payload(const absl::Status& status, const char* url) {
  absl::optional<absl::Cord> cord = status.GetPayload(url);
  if (!cord.has_value()) return std::nullopt;
  nlohmann::json j = nlohmann::json::parse(std::string(*cord), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

// Appends {a, b} to the pair list under `url` (at most kMaxDetailItems).
absl::Status AppendPair(absl::Status status, const char* url, const std::string& a,
                        const std::string& b) {
  if (status.ok()) return status;
  nlohmann::json list = Payload(status, url).value_or(nlohmann::json::array());
  if (!list.is_array()) list = nlohmann::json::array();
  if (list.size() < kMaxDetailItems) list.push_back({Cut(a), Cut(b)});
  status.SetPayload(
      url, absl::Cord(list.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
  return status;
}

template <typename T>
std::vector<T> Pairs(const absl::Status& status, const char* url) {
  std::vector<T> out;
  std::optional<nlohmann::json> list = Payload(status, url);
  if (!list.has_value() || !list->is_array()) return out;
  for (const auto& item : *list) {
    if (!item.is_array() || item.size() != 2 || !item[0].is_string() || !item[1].is_string()) {
      continue;
    }
    out.push_back(T{item[0].get<std::string>(), item[1].get<std::string>()});
  }
  return out;
}

}  // namespace

absl::Status WithErrorInfo(absl::Status status, const std::string& reason,
                           const std::map<std::string, std::string>& metadata) {
  if (status.ok()) return status;
  nlohmann::json meta = nlohmann::json::object();
  for (const auto& [k, v] : metadata) {
    if (meta.size() >= kMaxDetailItems) break;
    meta[Cut(k)] = Cut(v);
  }
  nlohmann::json info = {{"reason", Cut(reason)}, {"metadata", meta}};
  status.SetPayload(
      kInfoUrl, absl::Cord(info.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
  return status;
}

absl::Status WithFieldViolation(absl::Status status, const std::string& field,
                                const std::string& description) {
  return AppendPair(std::move(status), kFieldsUrl, field, description);
}

absl::Status WithQuotaViolation(absl::Status status, const std::string& subject,
                                const std::string& description) {
  return AppendPair(std::move(status), kQuotaUrl, subject, description);
}

absl::Status InField(const absl::Status& status, const std::string& field) {
  if (status.ok()) return status;
  absl::Status out(status.code(), absl::StrCat(field, ": ", status.message()));
  status.ForEachPayload(
      [&out](absl::string_view url, const absl::Cord& payload) { out.SetPayload(url, payload); });
  return WithFieldViolation(std::move(out), field, std::string(status.message()));
}

ErrorDetails GetErrorDetails(const absl::Status& status) {
  ErrorDetails details;
  if (std::optional<nlohmann::json> info = Payload(status, kInfoUrl);
      info.has_value() && info->is_object() && info->contains("reason") &&
      (*info)["reason"].is_string()) {
    ErrorReason e;
    e.reason = (*info)["reason"].get<std::string>();
    if (auto it = info->find("metadata"); it != info->end() && it->is_object()) {
      for (const auto& [k, v] : it->items()) {
        if (v.is_string()) e.metadata[k] = v.get<std::string>();
      }
    }
    details.info = std::move(e);
  }
  details.field_violations = Pairs<FieldViolation>(status, kFieldsUrl);
  details.quota_violations = Pairs<QuotaViolation>(status, kQuotaUrl);
  return details;
}

absl::Status WithErrorDetails(absl::Status status, const ErrorDetails& details) {
  if (status.ok()) return status;
  status.ErasePayload(kInfoUrl);
  status.ErasePayload(kFieldsUrl);
  status.ErasePayload(kQuotaUrl);
  if (details.info.has_value()) {
    status = WithErrorInfo(std::move(status), details.info->reason, details.info->metadata);
  }
  for (const auto& f : details.field_violations) {
    status = WithFieldViolation(std::move(status), f.field, f.description);
  }
  for (const auto& q : details.quota_violations) {
    status = WithQuotaViolation(std::move(status), q.subject, q.description);
  }
  return status;
}

}  // namespace lensgrid
