// Tests for hash types and key validation.
#include "common/hash_key.h"

#include <string>

#include "gtest/gtest.h"

namespace packstore {
namespace {

constexpr std::string_view kSha256Empty =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr std::string_view kSha1Empty = "da39a3ee5e6b4b0d3255bfef95601890afd80709";

TEST(HashKeyTest, LengthsAndNames) {
  EXPECT_EQ(HexKeyLength(HashType::kSha256), 64u);
  EXPECT_EQ(HexKeyLength(HashType::kSha1), 40u);
  EXPECT_EQ(HashTypeName(HashType::kSha256), "sha256");
  EXPECT_EQ(HashTypeName(HashType::kSha1), "sha1");
}

TEST(HashKeyTest, ParseHashTypeRoundTrips) {
  for (HashType type : {HashType::kSha256, HashType::kSha1}) {
    absl::StatusOr<HashType> parsed = ParseHashType(HashTypeName(type));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, type);
  }
}

TEST(HashKeyTest, ParseHashTypeRejectsOthers) {
  for (std::string_view name : {"", "SHA256", "sha-256", "sha256 ", "sha512", "md5", "sha"}) {
    EXPECT_EQ(ParseHashType(name).status().code(), absl::StatusCode::kInvalidArgument) << name;
  }
}

TEST(HashKeyTest, AcceptsValidKeys) {
  EXPECT_TRUE(ValidateKey(kSha256Empty, HashType::kSha256).ok());
  EXPECT_TRUE(ValidateKey(kSha1Empty, HashType::kSha1).ok());
  EXPECT_TRUE(ValidateKey(std::string(64, '0'), HashType::kSha256).ok());
  EXPECT_TRUE(ValidateKey("0123456789abcdef0123456789abcdef01234567", HashType::kSha1).ok());
}

TEST(HashKeyTest, RejectsWrongLength) {
  const std::string key(kSha256Empty);
  for (const std::string& bad : {std::string(), key.substr(0, 63), key + "0", key.substr(0, 40)}) {
    EXPECT_EQ(ValidateKey(bad, HashType::kSha256).code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
  // A valid sha256 key is not a valid sha1 key, and the other way round.
  EXPECT_EQ(ValidateKey(kSha256Empty, HashType::kSha1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateKey(kSha1Empty, HashType::kSha256).code(), absl::StatusCode::kInvalidArgument);
}

TEST(HashKeyTest, RejectsEveryNonLowerHexCharacter) {
  const std::string key(kSha256Empty);
  for (int c = 0; c < 256; ++c) {
    const bool lower_hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
    for (size_t position : {size_t{0}, size_t{31}, size_t{63}}) {
      std::string candidate = key;
      candidate[position] = static_cast<char>(c);
      EXPECT_EQ(ValidateKey(candidate, HashType::kSha256).ok(), lower_hex)
          << "char " << c << " at " << position;
    }
  }
}

TEST(HashKeyTest, RejectsPathLikeKeys) {
  std::string upper(kSha256Empty);
  upper[0] = 'E';
  std::string traversal = "../" + std::string(kSha256Empty).substr(3);
  std::string slash(kSha256Empty);
  slash[2] = '/';
  std::string nul(kSha256Empty);
  nul[10] = '\0';
  for (const std::string& bad : {upper, traversal, slash, nul}) {
    ASSERT_EQ(bad.size(), 64u);
    EXPECT_EQ(ValidateKey(bad, HashType::kSha256).code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(HashKeyTest, MessageQuotesABoundedPrefix) {
  const std::string huge(1 << 20, 'Z');
  absl::Status status = ValidateKey(huge, HashType::kSha256);
  ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("ZZZZZZZZ"), std::string_view::npos) << status;
  EXPECT_LT(status.message().size(), 300u);

  status = ValidateKey("not-a-key", HashType::kSha1);
  EXPECT_NE(status.message().find("not-a-key"), std::string_view::npos) << status;
  EXPECT_NE(status.message().find("40"), std::string_view::npos) << status;
}

}  // namespace
}  // namespace packstore
