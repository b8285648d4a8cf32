// Streaming content hasher on OpenSSL's EVP digests.
#include "common/hasher.h"

#include <openssl/evp.h>

#include <cstdio>
#include <cstdlib>

#include "absl/strings/escaping.h"

namespace packstore {
namespace {

const EVP_MD* Digest(HashType type) {
  switch (type) {
    case HashType::kSha256:
      return EVP_sha256();
    case HashType::kSha1:
      return EVP_sha1();
  }
  return nullptr;
}

// With a built-in digest and a valid context these calls fail only when
// OpenSSL itself is broken or out of memory. Carrying on would hand out a
// wrong key, which is worse than stopping.
void CheckOpenSsl(int rc, const char* call) {
  if (rc != 1) {
    std::fprintf(stderr, "packstore: %s failed\n", call);
    std::abort();
  }
}

std::string ToHex(const unsigned char* digest, unsigned int size) {
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), size));
}

}  // namespace

Hasher::Hasher(HashType type) : type_(type), ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr) {
    std::fprintf(stderr, "packstore: EVP_MD_CTX_new failed\n");
    std::abort();
  }
  CheckOpenSsl(EVP_DigestInit_ex(ctx_, Digest(type_), nullptr), "EVP_DigestInit_ex");
}

Hasher::~Hasher() { EVP_MD_CTX_free(ctx_); }

void Hasher::Update(std::string_view data) {
  CheckOpenSsl(EVP_DigestUpdate(ctx_, data.data(), data.size()), "EVP_DigestUpdate");
}

std::string Hasher::HexDigest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  CheckOpenSsl(EVP_DigestFinal_ex(ctx_, digest, &size), "EVP_DigestFinal_ex");
  CheckOpenSsl(EVP_DigestInit_ex(ctx_, Digest(type_), nullptr), "EVP_DigestInit_ex");
  return ToHex(digest, size);
}

std::string Hasher::Hash(HashType type, std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  CheckOpenSsl(EVP_Digest(data.data(), data.size(), digest, &size, Digest(type), nullptr),
               "EVP_Digest");
  return ToHex(digest, size);
}

}  // namespace packstore
