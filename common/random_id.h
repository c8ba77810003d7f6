// Unguessable identifiers: 128 bits from the operating system's CSPRNG
// (OpenSSL's RAND_bytes), as 32 lowercase hex digits. For lease ids, which
// a client must not be able to forge.
#ifndef LENSGRID_COMMON_RANDOM_ID_H_
#define LENSGRID_COMMON_RANDOM_ID_H_

#include <string>

namespace lensgrid {

std::string RandomHex128();

}  // namespace lensgrid

#endif  // LENSGRID_COMMON_RANDOM_ID_H_
