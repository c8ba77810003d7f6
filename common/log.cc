#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace lensgrid {
namespace {

std::atomic<LogFormat> g_format{LogFormat::kText};
std::mutex g_component_mu;
std::string& Component() {
  static std::string* component = new std::string("lensgrid");
  return *component;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

// RFC 3339 in UTC with milliseconds.
std::string Timestamp(int64_t unix_ms) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  return absl::StrFormat("%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                         static_cast<int>(unix_ms % 1000));
}

void WriteAll(const std::string& line) {
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // stderr is gone: nothing better to do
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace

absl::Status SetLogFormat(absl::string_view name) {
  if (name == "text") {
    g_format = LogFormat::kText;
  } else if (name == "json") {
    g_format = LogFormat::kJson;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-format \"", name.substr(0, 40), "\": expected text or json"));
  }
  return absl::OkStatus();
}

LogFormat GetLogFormat() { return g_format; }

void SetLogComponent(const std::string& component) {
  std::lock_guard<std::mutex> lock(g_component_mu);
  Component() = component;
}

std::string FormatLogLine(LogFormat format, const std::string& component, LogLevel level,
                          absl::string_view message, const LogFields& fields, int64_t unix_ms) {
  if (format == LogFormat::kJson) {
    nlohmann::ordered_json j;
    j["ts"] = Timestamp(unix_ms);
    j["level"] = LevelName(level);
    j["component"] = component;
    j["msg"] = std::string(message);
    for (const auto& [k, v] : fields) {
      if (!v.empty()) j[k] = v;
    }
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string line = absl::StrCat(component, ": ");
  if (level != LogLevel::kInfo) absl::StrAppend(&line, LevelName(level), ": ");
  absl::StrAppend(&line, message);
  std::string tail;
  for (const auto& [k, v] : fields) {
    if (v.empty()) continue;
    absl::StrAppend(&tail, tail.empty() ? "" : " ", k, "=", v);
  }
  if (!tail.empty()) absl::StrAppend(&line, " [", tail, "]");
  return line;
}

void LogEvent(LogLevel level, absl::string_view message, const LogFields& fields) {
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  std::string component;
  {
    std::lock_guard<std::mutex> lock(g_component_mu);
    component = Component();
  }
  WriteAll(FormatLogLine(g_format, component, level, message, fields, now) + "\n");
}

}  // namespace lensgrid
