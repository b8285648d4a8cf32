// Streaming content hasher (OpenSSL EVP; SHA-NI where the CPU has it).
//
// Hasher h(HashType::kSha256);
// h.Update(chunk1); h.Update(chunk2);
// std::string key = h.HexDigest();   // lowercase hex, the object's key
//
// Thread-safety: a Hasher is used by one thread at a time. With the built-in
// digests OpenSSL fails only when out of memory; the hasher then aborts
// rather than hand out a wrong key.
#ifndef PACKSTORE_COMMON_HASHER_H_
#define PACKSTORE_COMMON_HASHER_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "common/hash_key.h"

struct evp_md_ctx_st;

namespace packstore {

class Hasher {
 public:
  explicit Hasher(HashType type);
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;

  void Update(std::string_view data);
  void Update(const void* data, size_t size) {
    Update(std::string_view(static_cast<const char*>(data), size));
  }

  // Finishes the digest and returns it as lowercase hex. The hasher is then
  // reset and may hash a new object.
  std::string HexDigest();

  // One-shot convenience.
  static std::string Hash(HashType type, std::string_view data);

 private:
  HashType type_;
  evp_md_ctx_st* ctx_;
};

}  // namespace packstore

#endif  // PACKSTORE_COMMON_HASHER_H_
