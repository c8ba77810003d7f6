#include "worker/model/tokenizer/byte_level.h"

#include <array>

namespace lensgrid {
namespace {

// openai/gpt-2 encoder.py bytes_to_unicode(): printable Latin-1 bytes keep
// their code point; the other 68 bytes get 256, 257, ... in byte order.
struct ByteAlphabet {
  std::array<char32_t, 256> code_point;
  std::array<int16_t, 512> byte_of;  // code point -> byte, -1 when not in the alphabet
  std::array<std::string, 256> utf8;

  ByteAlphabet() {
    byte_of.fill(-1);
    char32_t next_extra = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      code_point[b] = printable ? static_cast<char32_t>(b) : next_extra++;
      byte_of[code_point[b]] = static_cast<int16_t>(b);
      AppendUtf8(code_point[b], &utf8[b]);
    }
  }
};

const ByteAlphabet& Alphabet() {
  static const ByteAlphabet* alphabet = new ByteAlphabet();
  return *alphabet;
}

bool InRange(std::string_view text, size_t pos, uint8_t lo, uint8_t hi) {
  if (pos >= text.size()) return false;
  const uint8_t c = static_cast<uint8_t>(text[pos]);
  return c >= lo && c <= hi;
}

// The allowed range of the second byte after lead byte `lead` (Unicode Table
// 3-7), and the total sequence length. Returns 0 for bytes that cannot start a
// sequence.
int SequenceShape(uint8_t lead, uint8_t* lo, uint8_t* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (lead < 0x80) return 1;
  if (lead < 0xC2) return 0;
  if (lead < 0xE0) return 2;
  if (lead == 0xE0) *lo = 0xA0;
  if (lead == 0xED) *hi = 0x9F;
  if (lead < 0xF0) return 3;
  if (lead == 0xF0) *lo = 0x90;
  if (lead == 0xF4) *hi = 0x8F;
  if (lead < 0xF5) return 4;
  return 0;
}

// Number of leading bytes at `pos` that are a prefix of a well-formed sequence,
// and the length that sequence needs.
int ValidPrefix(std::string_view text, size_t pos, int* needed) {
  uint8_t lo, hi;
  *needed = SequenceShape(static_cast<uint8_t>(text[pos]), &lo, &hi);
  if (*needed <= 1) return *needed;
  if (!InRange(text, pos + 1, lo, hi)) return 1;
  int n = 2;
  while (n < *needed && InRange(text, pos + n, 0x80, 0xBF)) ++n;
  return n;
}

}  // namespace

char32_t ByteToCodePoint(uint8_t b) { return Alphabet().code_point[b]; }

std::string ByteLevelEncode(std::string_view bytes) {
  const ByteAlphabet& alphabet = Alphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += alphabet.utf8[static_cast<uint8_t>(c)];
  return out;
}

std::optional<std::string> ByteLevelDecode(std::string_view text) {
  const ByteAlphabet& alphabet = Alphabet();
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    const int len = Utf8SequenceLength(text, pos);
    if (len == 0 || len > 2) return std::nullopt;  // the alphabet is U+0021..U+0143
    char32_t cp = static_cast<uint8_t>(text[pos]);
    if (len == 2) cp = ((cp & 0x1F) << 6) | (static_cast<uint8_t>(text[pos + 1]) & 0x3F);
    if (cp >= alphabet.byte_of.size() || alphabet.byte_of[cp] < 0) return std::nullopt;
    out.push_back(static_cast<char>(alphabet.byte_of[cp]));
    pos += len;
  }
  return out;
}

int Utf8SequenceLength(std::string_view text, size_t pos) {
  int needed;
  const int prefix = ValidPrefix(text, pos, &needed);
  return prefix == needed ? needed : 0;
}

int Utf8MaximalSubpartLength(std::string_view text, size_t pos) {
  int needed;
  const int prefix = ValidPrefix(text, pos, &needed);
  return prefix > 0 ? prefix : 1;
}

bool IsValidUtf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const int len = Utf8SequenceLength(text, pos);
    if (len == 0) return false;
    pos += len;
  }
  return true;
}

std::string DecodeUtf8Lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    const int len = Utf8SequenceLength(bytes, pos);
    if (len > 0) {
      out.append(bytes.substr(pos, len));
      pos += len;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
      pos += Utf8MaximalSubpartLength(bytes, pos);
    }
  }
  return out;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace lensgrid
