// Byte-level helpers for GPT-2's BPE: the byte <-> unicode alphabet and UTF-8
// handling.
//
// GPT-2 never feeds raw bytes to BPE: every byte 0..255 is first mapped to a
// printable code point (`bytes_to_unicode` in openai/gpt-2's encoder.py), so
// vocab and merges files are text.
//
//   std::string s = ByteLevelEncode("\xff ");   // "ÿĠ"
//   std::optional<std::string> b = ByteLevelDecode(s);  // "\xff "
//   std::string text = DecodeUtf8Lossy("\xe2\x82");  // "\uFFFD", as Python's
//   errors="replace"
#ifndef LENSGRID_WORKER_MODEL_TOKENIZER_BYTE_LEVEL_H_
#define LENSGRID_WORKER_MODEL_TOKENIZER_BYTE_LEVEL_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lensgrid {

// The code point GPT-2 uses to spell byte `b` (e.g. 0x20 -> U+0120 'Ġ').
char32_t ByteToCodePoint(uint8_t b);

// UTF-8 spelling of `bytes` in GPT-2's byte alphabet.
std::string ByteLevelEncode(std::string_view bytes);

// Inverse of ByteLevelEncode; nullopt when `text` is not UTF-8 made only of
// alphabet chars.
std::optional<std::string> ByteLevelDecode(std::string_view text);

// Length of the well-formed UTF-8 sequence starting at text[pos] (1..4), or 0
// when the bytes there are ill-formed (Unicode Table 3-7: no overlongs,
// surrogates or values > U+10FFFF). REQUIRES: pos < text.size().
int Utf8SequenceLength(std::string_view text, size_t pos);

// Length of the "maximal subpart" of an ill-formed sequence at text[pos] (>=
// 1): the bytes that one U+FFFD replaces under the Unicode / CPython / WHATWG
// substitution practice. REQUIRES: pos < text.size() and
// Utf8SequenceLength(text, pos) == 0.
int Utf8MaximalSubpartLength(std::string_view text, size_t pos);

bool IsValidUtf8(std::string_view text);

// `bytes` decoded as UTF-8 with each maximal ill-formed subpart replaced by
// U+FFFD, exactly as Python's bytes.decode("utf-8", errors="replace").
std::string DecodeUtf8Lossy(std::string_view bytes);

// Appends the UTF-8 encoding of `cp` (REQUIRES: a Unicode scalar value).
void AppendUtf8(char32_t cp, std::string* out);

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_TOKENIZER_BYTE_LEVEL_H_
