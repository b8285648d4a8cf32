// config.json: exact serialization and strict parsing.
#include "server/store/config.h"

#include "gtest/gtest.h"
#include "tests/store/test_util.h"

namespace packstore {
namespace {

TEST(ConfigTest, SerializesExactlyAsDiskObjectstore) {
  ContainerConfig c;
  c.container_id = "4660e1f30280432695f42d153fcafa9c";
  EXPECT_EQ(SerializeConfigJson(c),
            "{\"container_version\": 1, \"loose_prefix_len\": 2, \"pack_size_target\": "
            "4294967296, \"hash_type\": \"sha256\", \"container_id\": "
            "\"4660e1f30280432695f42d153fcafa9c\", \"compression_algorithm\": \"zlib+1\"}");
}

TEST(ConfigTest, RoundTripsEveryField) {
  ContainerConfig c;
  c.loose_prefix_len = 3;
  c.pack_size_target = 8192;
  c.hash_type = HashType::kSha1;
  c.container_id = NewContainerId();
  c.codec = Codec{CodecKind::kZstd, 7};
  auto parsed = ParseConfigJson(SerializeConfigJson(c));
  PS_ASSERT_OK(parsed);
  EXPECT_EQ(parsed->loose_prefix_len, 3);
  EXPECT_EQ(parsed->pack_size_target, 8192);
  EXPECT_EQ(parsed->hash_type, HashType::kSha1);
  EXPECT_EQ(parsed->container_id, c.container_id);
  EXPECT_EQ(parsed->codec, c.codec);
}

TEST(ConfigTest, IgnoresUnknownKeysOfAnyShape) {
  auto parsed = ParseConfigJson(
      "{\n  \"extra\": {\"a\": [1, 2, {\"b\": \"}\"}]},\n \"container_version\": 1, "
      "\"loose_prefix_len\": 0, \"pack_size_target\": 10, \"hash_type\": \"sha256\", "
      "\"container_id\": \"x\", \"compression_algorithm\": \"zlib+9\", \"n\": null, "
      "\"f\": 1.5e3, \"t\": true}");
  PS_ASSERT_OK(parsed);
  EXPECT_EQ(parsed->loose_prefix_len, 0);
  EXPECT_EQ(parsed->codec, (Codec{CodecKind::kZlib, 9}));
}

TEST(ConfigTest, NewContainerIdIsUuid4Hex) {
  std::string id = NewContainerId();
  ASSERT_EQ(id.size(), 32u);
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(id[12], '4');
  EXPECT_NE(std::string("89ab").find(id[16]), std::string::npos);
  EXPECT_NE(NewContainerId(), id);
}

struct BadConfig {
  const char* text;
  const char* message_part;
};

class BadConfigTest : public ::testing::TestWithParam<BadConfig> {};

TEST_P(BadConfigTest, IsRejectedWithAClearMessage) {
  auto parsed = ParseConfigJson(GetParam().text);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(parsed.status().message()).find(GetParam().message_part),
            std::string::npos)
      << parsed.status();
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadConfigTest,
    ::testing::Values(
        BadConfig{"", "expected a JSON object"}, BadConfig{"[1]", "expected a JSON object"},
        BadConfig{"{\"container_version\": 1", "expected"},
        BadConfig{"{} trailing", "trailing"},
        BadConfig{"{\"container_version\": 2, \"loose_prefix_len\": 2, \"pack_size_target\": "
                  "1, \"hash_type\": \"sha256\", \"container_id\": \"x\", "
                  "\"compression_algorithm\": \"zlib+1\"}",
                  "container_version 2"},
        BadConfig{"{\"container_version\": 1, \"loose_prefix_len\": 2, \"pack_size_target\": "
                  "1, \"hash_type\": \"md5\", \"container_id\": \"x\", "
                  "\"compression_algorithm\": \"zlib+1\"}",
                  "hash_type"},
        BadConfig{"{\"container_version\": 1, \"loose_prefix_len\": 2, \"pack_size_target\": "
                  "1, \"hash_type\": \"sha256\", \"container_id\": \"x\", "
                  "\"compression_algorithm\": \"lzma\"}",
                  "compression_algorithm"},
        BadConfig{"{\"container_version\": 1, \"loose_prefix_len\": -1, \"pack_size_target\": "
                  "1, \"hash_type\": \"sha256\", \"container_id\": \"x\", "
                  "\"compression_algorithm\": \"zlib+1\"}",
                  "loose_prefix_len"},
        BadConfig{"{\"container_version\": 1, \"loose_prefix_len\": 2, \"pack_size_target\": "
                  "0, \"hash_type\": \"sha256\", \"container_id\": \"x\", "
                  "\"compression_algorithm\": \"zlib+1\"}",
                  "pack_size_target"},
        BadConfig{"{\"container_version\": 1, \"loose_prefix_len\": \"2\", \"pack_size_target\": "
                  "1, \"hash_type\": \"sha256\", \"container_id\": \"x\", "
                  "\"compression_algorithm\": \"zlib+1\"}",
                  "must be an integer"},
        BadConfig{"{\"container_version\": 1, \"loose_prefix_len\": 2, "
                  "\"compression_algorithm\": \"zlib+1\"}",
                  "lacks \"pack_size_target\""},
        BadConfig{"{\"container_version\": 1, \"container_version\": 1}", "duplicate key"}));

}  // namespace
}  // namespace packstore
