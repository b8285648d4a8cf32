// Tests for the streaming hasher against published SHA-256 and SHA-1 vectors.
#include "common/hasher.h"

#include <algorithm>
#include <random>
#include <string>

#include "gtest/gtest.h"

namespace packstore {
namespace {

// FIPS 180-2 examples plus the empty string.
constexpr std::string_view kTwoBlock = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";

struct Vector {
  HashType type;
  std::string input;
  std::string digest;
};

std::vector<Vector> Vectors() {
  return {
      {HashType::kSha256, "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {HashType::kSha256, "abc",
       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
      {HashType::kSha256, std::string(kTwoBlock),
       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
      {HashType::kSha256, std::string(1000000, 'a'),
       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
      {HashType::kSha1, "", "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
      {HashType::kSha1, "abc", "a9993e364706816aba3e25717850c26c9cd0d89d"},
      {HashType::kSha1, std::string(kTwoBlock), "84983e441c3bd26ebaae4aa1f95129e5e54670f1"},
      {HashType::kSha1, std::string(1000000, 'a'), "34aa973cd4c4daa4f61eeb2bdbad27316534016f"},
  };
}

std::string RandomBytes(size_t size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(size, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

TEST(HasherTest, OneShotMatchesKnownVectors) {
  for (const Vector& v : Vectors()) {
    EXPECT_EQ(Hasher::Hash(v.type, v.input), v.digest) << v.input.substr(0, 10);
  }
}

TEST(HasherTest, StreamingMatchesKnownVectors) {
  for (const Vector& v : Vectors()) {
    Hasher hasher(v.type);
    std::string_view rest = v.input;
    // Odd chunk sizes cross the 64-byte block boundaries at varying points.
    for (size_t chunk = 1; !rest.empty(); chunk = chunk * 3 + 1) {
      const size_t n = std::min(chunk, rest.size());
      hasher.Update(rest.substr(0, n));
      rest.remove_prefix(n);
    }
    EXPECT_EQ(hasher.HexDigest(), v.digest) << v.input.substr(0, 10);
  }
}

TEST(HasherTest, MultiChunkUpdateEqualsOneShot) {
  const std::string data = RandomBytes(3 * 1024 * 1024 + 17, 1);
  for (HashType type : {HashType::kSha256, HashType::kSha1}) {
    for (size_t chunk :
         {size_t{1}, size_t{63}, size_t{64}, size_t{65}, size_t{4097}, size_t{1 << 20}}) {
      Hasher hasher(type);
      // Byte-sized chunks over megabytes are slow; one MiB of them is enough.
      const std::string_view input =
          chunk == 1 ? std::string_view(data).substr(0, 1 << 20) : std::string_view(data);
      for (size_t pos = 0; pos < input.size(); pos += chunk) {
        hasher.Update(input.data() + pos, std::min(chunk, input.size() - pos));
      }
      EXPECT_EQ(hasher.HexDigest(), Hasher::Hash(type, input)) << "chunk " << chunk;
    }
  }
}

TEST(HasherTest, HexDigestResetsForTheNextObject) {
  Hasher hasher(HashType::kSha256);
  hasher.Update("something else entirely");
  EXPECT_NE(hasher.HexDigest(), Hasher::Hash(HashType::kSha256, "abc"));
  hasher.Update("abc");
  EXPECT_EQ(hasher.HexDigest(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hasher.HexDigest(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(HasherTest, DigestsAreValidKeys) {
  const std::string data = RandomBytes(1000, 2);
  for (HashType type : {HashType::kSha256, HashType::kSha1}) {
    const std::string key = Hasher::Hash(type, data);
    EXPECT_TRUE(ValidateKey(key, type).ok()) << key;
  }
}

}  // namespace
}  // namespace packstore
