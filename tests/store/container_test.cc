// The container engine through its public interface: writes in every mode,
// reads of every kind, maintenance, and FORMAT.md's edge cases.
#include "server/store/container.h"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "common/hasher.h"
#include "gtest/gtest.h"
#include "server/store/file_io.h"
#include "server/store/object_reader.h"
#include "tests/store/test_util.h"

namespace packstore {
namespace {

using ::packstore::testing::ExpectValid;
using ::packstore::testing::RandomBytes;
using ::packstore::testing::TempDir;
using ::packstore::testing::TextBytes;

std::unique_ptr<Container> MakeContainer(const std::string& dir, InitOptions options = {}) {
  absl::Status init = Container::Init(dir, options);
  EXPECT_TRUE(init.ok()) << init;
  auto opened = Container::Open(dir);
  EXPECT_TRUE(opened.ok()) << opened.status();
  return opened.ok() ? std::move(*opened) : nullptr;
}

std::vector<std::string> AllKeys(Container& c) {
  std::vector<std::string> keys;
  EXPECT_TRUE(c.ListKeys("", [&](std::string_view k) {
                 keys.emplace_back(k);
                 return true;
               }).ok());
  return keys;
}


// Every combination FORMAT.md allows that changes where bytes go.
struct Layout {
  int prefix_len;
  HashType hash_type;
};

class LayoutTest : public ::testing::TestWithParam<Layout> {};

TEST_P(LayoutTest, WritesAndReadsInEveryModeAndCompression) {
  TempDir tmp;
  InitOptions options;
  options.loose_prefix_len = GetParam().prefix_len;
  options.hash_type = GetParam().hash_type;
  auto c = MakeContainer(tmp.Sub("c"), options);
  ASSERT_NE(c, nullptr);
  std::vector<std::string> contents = {"",  "x", TextBytes(1, 5000), RandomBytes(2, 300000),
                                       TextBytes(3, 400000)};
  std::map<std::string, std::string> expected;
  for (const std::string& content : contents) {
    std::string key = Hasher::Hash(GetParam().hash_type, content);
    expected[key] = content;
    auto loose = c->PutLoose(content);
    PS_ASSERT_OK(loose);
    EXPECT_EQ(loose->key, key);
    EXPECT_EQ(loose->size, content.size());
    std::string path = tmp.Sub("c") + "/loose/" +
                       (GetParam().prefix_len == 0
                            ? key
                            : key.substr(0, GetParam().prefix_len) + "/" +
                                  key.substr(GetParam().prefix_len));
    EXPECT_TRUE(PathExists(path)) << path;
  }
  for (CompressMode mode : {CompressMode::kNo, CompressMode::kYes, CompressMode::kAuto}) {
    std::vector<std::string_view> views;
    for (const std::string& content : contents) {
      std::string salted = content + std::to_string(static_cast<int>(mode));
      expected[Hasher::Hash(GetParam().hash_type, salted)] = salted;
    }
    std::vector<std::string> salted;
    for (const std::string& content : contents) {
      salted.push_back(content + std::to_string(static_cast<int>(mode)));
    }
    views.assign(salted.begin(), salted.end());
    auto written = c->PutPacked(views, mode);
    PS_ASSERT_OK(written);
    ASSERT_EQ(written->size(), views.size());
    for (size_t i = 0; i < views.size(); ++i) {
      EXPECT_EQ((*written)[i].key, Hasher::Hash(GetParam().hash_type, views[i]));
      auto info = c->Stat((*written)[i].key);
      PS_ASSERT_OK(info);
      ASSERT_TRUE(info->packed.has_value());
      bool compressible = views[i].size() > 1000 && i != 3;  // text, not random
      if (mode != CompressMode::kAuto) {
        EXPECT_EQ(info->packed->compressed, mode == CompressMode::kYes);
      }
      if (mode == CompressMode::kAuto && views[i].size() > 1000) {
        EXPECT_EQ(info->packed->compressed, compressible) << i;
      }
    }
  }
  for (const auto& [key, content] : expected) {
    auto got = c->Get(key);
    PS_ASSERT_OK(got);
    EXPECT_EQ(*got, content) << key;
  }
  std::vector<std::string> keys = AllKeys(*c);
  std::vector<std::string> want;
  for (const auto& [key, content] : expected) want.push_back(key);
  EXPECT_EQ(keys, want);
  ExpectValid(*c);
  auto packed = c->PackAllLoose({.compress = CompressMode::kAuto});
  PS_ASSERT_OK(packed);
  EXPECT_EQ(packed->packed + packed->already_packed, contents.size());
  for (const auto& [key, content] : expected) EXPECT_EQ(*c->Get(key), content);
  ExpectValid(*c);
}

INSTANTIATE_TEST_SUITE_P(Layouts, LayoutTest,
                         ::testing::Values(Layout{0, HashType::kSha256},
                                           Layout{2, HashType::kSha256},
                                           Layout{3, HashType::kSha256},
                                           Layout{2, HashType::kSha1}));

TEST(ContainerTest, EmptyObjectCompressedIsTheCanonicalZlibStream) {
  TempDir tmp;
  auto c = MakeContainer(tmp.Sub("c"));
  auto written = c->PutPacked({""}, CompressMode::kYes);
  PS_ASSERT_OK(written);
  auto info = c->Stat((*written)[0].key);
  PS_ASSERT_OK(info);
  ASSERT_TRUE(info->packed);
  EXPECT_EQ(info->packed->length, 8u);
  auto pack = ReadSmallFile(tmp.Sub("c/packs/0"));
  PS_ASSERT_OK(pack);
  EXPECT_EQ(pack->substr(info->packed->offset, 8), std::string("\x78\x01\x03\x00\x00\x00\x00\x01", 8));
  EXPECT_EQ(*c->Get((*written)[0].key), "");
}

TEST(ContainerTest, ObjectBothLooseAndPackedIsReadFromThePack) {
  TempDir tmp;
  auto c = MakeContainer(tmp.Sub("c"));
  std::string content = TextBytes(9, 10000);
  auto loose = c->PutLoose(content);
  PS_ASSERT_OK(loose);
  auto packed = c->PutPacked({content}, CompressMode::kYes);
  PS_ASSERT_OK(packed);
  auto info = c->Stat(loose->key);
  PS_ASSERT_OK(info);
  EXPECT_TRUE(info->packed.has_value());
  // Damage the loose copy: a read that went to it would now differ.
  {
    auto fd = OpenFile(tmp.Sub("c/loose/") + loose->key.substr(0, 2) + "/" + loose->key.substr(2),
                       O_WRONLY);
    PS_ASSERT_OK(fd);
    PS_ASSERT_OK(PwriteAll(fd->get(), "CORRUPT", 0));
  }
  EXPECT_EQ(*c->Get(loose->key), content);
  auto report = c->Validate();
  PS_ASSERT_OK(report);
  ASSERT_EQ(report->issues.size(), 1u);
  EXPECT_EQ(report->issues[0].kind, ValidateIssue::Kind::kCorruptLoose);
  auto cleaned = c->Clean({});
  PS_ASSERT_OK(cleaned);
  EXPECT_EQ(cleaned->loose_deleted, 1u);
  ExpectValid(*c);
}

TEST(ContainerTest, RepeatedContentAddsNoBytesAndNoRows) {
  TempDir tmp;
  auto c = MakeContainer(tmp.Sub("c"));
  std::string a = RandomBytes(1, 4096), b = RandomBytes(2, 4096);
  auto first = c->PutPacked({a, b, a});
  PS_ASSERT_OK(first);
  EXPECT_EQ((*first)[0].key, (*first)[2].key);
  auto size_before = PathSize(tmp.Sub("c/packs/0"));
  auto second = c->PutPacked({b, a});
  PS_ASSERT_OK(second);
  EXPECT_EQ(*PathSize(tmp.Sub("c/packs/0")), *size_before);
  auto counts = c->Counts();
  PS_ASSERT_OK(counts);
  EXPECT_EQ(counts->packed_objects, 2u);
  EXPECT_EQ(counts->pack_file_bytes, 8192u);
  EXPECT_EQ(counts->hole_bytes, 0u);
}

TEST(ContainerTest, RolloverMakesExactly32PacksFor256ObjectsOf1KiB) {
  TempDir tmp;
  InitOptions options;
  options.pack_size_target = 8192;
  auto c = MakeContainer(tmp.Sub("c"), options);
  std::vector<std::string> objects;
  for (int i = 0; i < 256; ++i) objects.push_back(RandomBytes(100 + i, 1024));
  std::vector<std::string_view> views(objects.begin(), objects.end());
  PS_ASSERT_OK(c->PutPacked(views));
  auto listing = ListDir(tmp.Sub("c/packs"));
  PS_ASSERT_OK(listing);
  std::set<std::string> names(listing->begin(), listing->end());
  ASSERT_EQ(names.size(), 32u);
  for (int i = 0; i < 32; ++i) {
    EXPECT_TRUE(names.contains(std::to_string(i)));
    EXPECT_EQ(*PathSize(tmp.Sub("c/packs/" + std::to_string(i))), 8192u);
  }
  for (const std::string& o : objects) EXPECT_EQ(*c->Get(Hasher::Hash(HashType::kSha256, o)), o);
}

TEST(ContainerTest, RolloverFromLooseAndStreamsEndsAtMostOneObjectPastTarget) {
  TempDir tmp;
  InitOptions options;
  options.pack_size_target = 100000;
  auto c = MakeContainer(tmp.Sub("c"), options);
  for (int i = 0; i < 20; ++i) PS_ASSERT_OK(c->PutLoose(RandomBytes(i, 30000 + i)));
  PS_ASSERT_OK(c->PackAllLoose({}));
  for (int i = 0; i < 3; ++i) {
    std::string big = RandomBytes(1000 + i, 250000);
    StringSource source(big);
    PS_ASSERT_OK(c->PutPackedStream(source));
  }
  auto listing = ListDir(tmp.Sub("c/packs"));
  PS_ASSERT_OK(listing);
  for (const std::string& name : *listing) {
    uint64_t size = *PathSize(tmp.Sub("c/packs/" + name));
    EXPECT_LT(size, 100000u + 250000u) << name;
  }
  ExpectValid(*c);
  auto counts = c->Counts();
  EXPECT_EQ(counts->packed_objects, 23u);
  EXPECT_EQ(counts->loose_objects, 0u);
}

TEST(ContainerTest, RangesOfCompressedAndPlainObjects) {
  TempDir tmp;
  auto c = MakeContainer(tmp.Sub("c"));
  std::string content = TextBytes(5, 3 << 20);
  auto plain = c->PutPacked({content}, CompressMode::kNo);
  PS_ASSERT_OK(plain);
  std::string other = content + "!";
  auto compressed = c->PutPacked({other}, CompressMode::kYes);
  PS_ASSERT_OK(compressed);
  auto loose = c->PutLoose(content + "?");
  PS_ASSERT_OK(loose);
  for (uint64_t offset : {0ull, 1ull, 1000000ull, (3ull << 20) - 5}) {
    for (uint64_t length : {0ull, 1ull, 4096ull, 2000000ull}) {
      EXPECT_EQ(*c->GetRange((*plain)[0].key, {offset, length}), content.substr(offset, length));
      EXPECT_EQ(*c->GetRange((*compressed)[0].key, {offset, length}), other.substr(offset, length));
      EXPECT_EQ(*c->GetRange(loose->key, {offset, length}),
                (content + "?").substr(offset, length));
    }
  }
  EXPECT_EQ(*c->GetRange((*compressed)[0].key, {(3ull << 20), std::nullopt}), "!");
  auto past = c->GetRange((*plain)[0].key, {(3ull << 20) + 1, 1});
  EXPECT_EQ(past.status().code(), absl::StatusCode::kOutOfRange);

  // Seeking backwards in a compressed object restarts the stream.
  auto reader = c->OpenObject((*compressed)[0].key);
  PS_ASSERT_OK(reader);
  EXPECT_TRUE((*reader)->compressed());
  char buf[16];
  PS_ASSERT_OK((*reader)->Seek(2000000));
  ASSERT_EQ(*(*reader)->Read(buf, 16), 16u);
  EXPECT_EQ(std::string(buf, 16), content.substr(2000000, 16));
  PS_ASSERT_OK((*reader)->Seek(10));
  ASSERT_EQ(*(*reader)->Read(buf, 16), 16u);
  EXPECT_EQ(std::string(buf, 16), content.substr(10, 16));
}

TEST(ContainerTest, MalformedKeysAreRejectedBeforeAnyPath) {
  TempDir tmp;
  auto c = MakeContainer(tmp.Sub("c"));
  std::string good = Hasher::Hash(HashType::kSha256, "x");
  for (std::string bad : {std::string(""), good.substr(1), good + "0", std::string(64, 'A'),
                          "../" + good.substr(3), good.substr(0, 62) + "/.",
                          std::string(64, 'g')}) {
    EXPECT_EQ(c->Get(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(c->Has(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(c->Delete({bad}).status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(c->GetMany({good, bad}, [](auto, auto&) { return absl::OkStatus(); }).code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(c->Get(good).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(*c->Has(good));
}

TEST(ContainerTest, GetManyDeliversInStorageOrderAndReportsMissing) {
  TempDir tmp;
  InitOptions options;
  options.pack_size_target = 20000;
  auto c = MakeContainer(tmp.Sub("c"), options);
  std::vector<std::string> objects;
  for (int i = 0; i < 50; ++i) objects.push_back(TextBytes(i, 1000 + i * 10));
  std::vector<std::string_view> first(objects.begin(), objects.begin() + 25);
  PS_ASSERT_OK(c->PutPacked(first, CompressMode::kAuto));
  for (int i = 25; i < 40; ++i) PS_ASSERT_OK(c->PutLoose(objects[i]));
  std::vector<std::string> keys;
  for (int i = 39; i >= 0; --i) keys.push_back(Hasher::Hash(HashType::kSha256, objects[i]));
  std::string missing = Hasher::Hash(HashType::kSha256, "missing");
  keys.push_back(missing);
  keys.push_back(keys[0]);  // a repeat is delivered once

  std::vector<std::pair<int64_t, uint64_t>> order;
  std::set<std::string> seen;
  int not_found = 0;
  absl::Status s = c->GetMany(keys, [&](std::string_view key, const absl::StatusOr<std::string_view>& content) {
    EXPECT_TRUE(seen.insert(std::string(key)).second) << key;
    if (!content.ok()) {
      EXPECT_EQ(content.status().code(), absl::StatusCode::kNotFound);
      EXPECT_EQ(key, missing);
      ++not_found;
      return absl::OkStatus();
    }
    EXPECT_EQ(Hasher::Hash(HashType::kSha256, *content), key);
    auto info = c->Stat(key);
    order.emplace_back(info->packed ? info->packed->pack_id : INT64_MAX,
                       info->packed ? info->packed->offset : 0);
    return absl::OkStatus();
  });
  PS_ASSERT_OK(s);
  EXPECT_EQ(not_found, 1);
  EXPECT_EQ(seen.size(), 41u);
  EXPECT_TRUE(std::is_sorted(order.begin(), order.end()));
}

TEST(ContainerTest, GetManyHandsLargeObjectsBackUnread) {
  TempDir tmp;
  auto c = MakeContainer(tmp.Sub("c"));
  // Small and large objects interleaved in one pack, plus a large loose one.
  std::vector<std::string> objects;
  for (int i = 0; i < 6; ++i) objects.push_back(RandomBytes(i, i % 2 ? 5000 : 100));
  std::vector<std::string_view> views(objects.begin(), objects.end());
  PS_ASSERT_OK(c->PutPacked(views, CompressMode::kYes));
  objects.push_back(RandomBytes(99, 7000));
  PS_ASSERT_OK(c->PutLoose(objects.back()));
  std::vector<std::string> keys;
  for (const std::string& o : objects) keys.push_back(Hasher::Hash(HashType::kSha256, o));

  std::vector<std::string> whole, large;
  PS_ASSERT_OK(c->GetMany(
      keys,
      [&](std::string_view key, const absl::StatusOr<std::string_view>& content) {
        EXPECT_TRUE(content.ok());
        EXPECT_LE(content->size(), 1000u);
        EXPECT_EQ(Hasher::Hash(HashType::kSha256, *content), key);
        whole.emplace_back(key);
        return absl::OkStatus();
      },
      1000,
      [&](std::string_view key, uint64_t size) {
        EXPECT_GT(size, 1000u);
        large.emplace_back(key);
        return absl::OkStatus();
      }));
  EXPECT_EQ(whole.size(), 3u);
  EXPECT_EQ(large.size(), 4u);
  EXPECT_EQ(large.back(), keys.back());  // the loose one comes last
}

TEST(ContainerTest, ListKeysMergesPackedAndLooseOnceEachAndResumes) {
  TempDir tmp;
  auto c = MakeContainer(tmp.Sub("c"));
  std::set<std::string> want;
  for (int i = 0; i < 30; ++i) {
    std::string o = RandomBytes(i, 100);
    want.insert(Hasher::Hash(HashType::kSha256, o));
    if (i % 3 == 0) PS_ASSERT_OK(c->PutLoose(o));
    if (i % 3 != 2) PS_ASSERT_OK(c->PutPacked({o}));
    if (i % 3 == 2) PS_ASSERT_OK(c->PutLoose(o));
  }
  std::vector<std::string> keys = AllKeys(*c);
  EXPECT_EQ(keys, std::vector<std::string>(want.begin(), want.end()));
  std::vector<std::string> tail;
  PS_ASSERT_OK(c->ListKeys(keys[9], [&](std::string_view k) {
    tail.emplace_back(k);
    return tail.size() < 5;
  }));
  EXPECT_EQ(tail, std::vector<std::string>(keys.begin() + 10, keys.begin() + 15));
}

TEST(ContainerTest, DeleteLeavesHolesThatRepackReclaims) {
  TempDir tmp;
  auto c = MakeContainer(tmp.Sub("c"));
  std::vector<std::string> objects;
  for (int i = 0; i < 10; ++i) objects.push_back(RandomBytes(i, 10000));
  std::vector<std::string_view> views(objects.begin(), objects.end());
  auto written = c->PutPacked(views);
  PS_ASSERT_OK(written);
  PS_ASSERT_OK(c->PutLoose(objects[0]));
  auto deleted = c->Delete({(*written)[0].key, (*written)[3].key, (*written)[4].key});
  PS_ASSERT_OK(deleted);
  EXPECT_EQ(*deleted, 3u);
  EXPECT_EQ(c->Get((*written)[0].key).status().code(), absl::StatusCode::kNotFound);
  auto counts = c->Counts();
  EXPECT_EQ(counts->hole_bytes, 30000u);

  // A reader opened before the repack keeps reading the old file.
  auto reader = c->OpenObject((*written)[5].key);
  PS_ASSERT_OK(reader);
  auto repacked = c->Repack({});
  PS_ASSERT_OK(repacked);
  EXPECT_EQ(repacked->packs_rewritten, 1u);
  EXPECT_EQ(repacked->bytes_reclaimed, 30000u);
  EXPECT_EQ(*(*reader)->ReadRest(), objects[5]);
  counts = c->Counts();
  EXPECT_EQ(counts->hole_bytes, 0u);
  EXPECT_EQ(counts->packed_objects, 7u);
  for (int i : {1, 2, 5, 6, 7, 8, 9}) EXPECT_EQ(*c->Get((*written)[i].key), objects[i]);
  ExpectValid(*c);

  // Recompressing rewrites every pack; content stays the same.
  auto recompressed = c->Repack({.compress = CompressMode::kYes});
  PS_ASSERT_OK(recompressed);
  EXPECT_EQ(recompressed->packs_rewritten, 1u);
  EXPECT_TRUE(c->Stat((*written)[1].key)->packed->compressed);
  for (int i : {1, 2, 5, 6, 7, 8, 9}) EXPECT_EQ(*c->Get((*written)[i].key), objects[i]);
  PS_ASSERT_OK(c->Repack({.compress = CompressMode::kNo}));
  EXPECT_FALSE(c->Stat((*written)[1].key)->packed->compressed);
  ExpectValid(*c);
  // New writes reuse the freed low pack id.
  auto more = c->PutPacked({"after repack"});
  PS_ASSERT_OK(more);
  EXPECT_EQ(*c->Get((*more)[0].key), "after repack");
}

TEST(ContainerTest, ValidateFindsCorruptionOverlapsAndStrays) {
  TempDir tmp;
  auto c = MakeContainer(tmp.Sub("c"));
  auto written = c->PutPacked({"aaaaaaaaaa", "bbbbbbbbbb", TextBytes(1, 5000)}, CompressMode::kAuto);
  PS_ASSERT_OK(written);
  {
    auto fd = OpenFile(tmp.Sub("c/packs/0"), O_WRONLY);
    PS_ASSERT_OK(fd);
    PS_ASSERT_OK(PwriteAll(fd->get(), "X", 3));  // inside the first object
  }
  PS_ASSERT_OK(WriteAll(OpenFile(tmp.Sub("c/packs/notapack"), O_WRONLY | O_CREAT)->get(), "x"));
  PS_ASSERT_OK(WriteAll(OpenFile(tmp.Sub("c/loose/zz"), O_WRONLY | O_CREAT)->get(), "x"));
  auto report = c->Validate();
  PS_ASSERT_OK(report);
  std::multiset<ValidateIssue::Kind> kinds;
  for (const auto& issue : report->issues) kinds.insert(issue.kind);
  EXPECT_EQ(kinds.count(ValidateIssue::Kind::kCorruptPacked), 1u);
  EXPECT_EQ(kinds.count(ValidateIssue::Kind::kStrayFile), 2u);
  EXPECT_EQ(report->packed_checked, 3u);
  EXPECT_EQ(c->Get((*written)[0].key).value(), "aaaXaaaaaa");  // reads do not verify
}

TEST(ContainerTest, ImportCopiesOnlyMissingObjects) {
  TempDir tmp;
  auto src = MakeContainer(tmp.Sub("src"));
  auto dst = MakeContainer(tmp.Sub("dst"));
  std::vector<std::string> objects;
  for (int i = 0; i < 20; ++i) objects.push_back(TextBytes(i, 100 + i));
  objects.push_back(RandomBytes(99, 3 << 20));  // streamed, not batched
  for (size_t i = 0; i < objects.size(); ++i) {
    if (i % 2) {
      PS_ASSERT_OK(src->PutLoose(objects[i]));
    } else {
      PS_ASSERT_OK(src->PutPacked({objects[i]}, CompressMode::kYes));
    }
  }
  PS_ASSERT_OK(dst->PutPacked({objects[0], objects[1]}));
  auto result = dst->Import(*src);
  PS_ASSERT_OK(result);
  EXPECT_EQ(result->already_present, 2u);
  EXPECT_EQ(result->imported, objects.size() - 2);
  for (const std::string& o : objects) EXPECT_EQ(*dst->Get(Hasher::Hash(HashType::kSha256, o)), o);
  ExpectValid(*dst);
  auto again = dst->Import(*src);
  PS_ASSERT_OK(again);
  EXPECT_EQ(again->imported, 0u);
}

TEST(ContainerTest, InitAndOpenRefuseWhatTheyShould) {
  TempDir tmp;
  InitOptions zstd;
  zstd.codec = Codec{CodecKind::kZstd, 3};
  absl::Status refused = Container::Init(tmp.Sub("z"), zstd);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(refused.message()).find("disk-objectstore"), std::string::npos);
  zstd.allow_incompatible_codec = true;
  auto z = MakeContainer(tmp.Sub("z"), zstd);
  auto written = z->PutPacked({TextBytes(1, 100000)}, CompressMode::kYes);
  PS_ASSERT_OK(written);
  EXPECT_EQ(*z->Get((*written)[0].key), TextBytes(1, 100000));
  ExpectValid(*z);

  EXPECT_EQ(Container::Init(tmp.Sub("z"), {}).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_EQ(::mkdir(tmp.Sub("full").c_str(), 0755), 0);
  PS_ASSERT_OK(WriteAll(OpenFile(tmp.Sub("full/file"), O_WRONLY | O_CREAT)->get(), "x"));
  EXPECT_EQ(Container::Init(tmp.Sub("full"), {}).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Container::Open(tmp.Sub("full")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Container::Open(tmp.Sub("nowhere")).status().code(), absl::StatusCode::kNotFound);

  PS_ASSERT_OK(Container::Init(tmp.Sub("bad"), {}));
  {
    auto fd = OpenFile(tmp.Sub("bad/config.json"), O_WRONLY | O_TRUNC);
    PS_ASSERT_OK(WriteAll(fd->get(), "{\"container_version\": 1,"));
  }
  auto bad = Container::Open(tmp.Sub("bad"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("config.json"), std::string::npos);
}

TEST(ContainerTest, SharedOpenReadsAndWritesLooseButNotPacks) {
  TempDir tmp;
  auto writer = MakeContainer(tmp.Sub("c"));
  auto second_writer = Container::Open(tmp.Sub("c"), OpenMode::kWriter);
  EXPECT_EQ(second_writer.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(second_writer.status().message()).find("pid"), std::string::npos);
  auto shared = Container::Open(tmp.Sub("c"), OpenMode::kShared);
  PS_ASSERT_OK(shared);
  auto loose = (*shared)->PutLoose("from a shared opener");
  PS_ASSERT_OK(loose);
  EXPECT_EQ((*shared)->PutPacked({"x"}).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*shared)->PackAllLoose({}).status().code(), absl::StatusCode::kFailedPrecondition);
  PS_ASSERT_OK(writer->PackAllLoose({}));
  // Packed and cleaned by the writer: the shared opener finds it in the index.
  EXPECT_EQ(*(*shared)->Get(loose->key), "from a shared opener");
  EXPECT_TRUE((*shared)->Stat(loose->key)->packed.has_value());
}

TEST(ContainerTest, StreamedObjectsOfAnySizeRoundTrip) {
  TempDir tmp;
  auto c = MakeContainer(tmp.Sub("c"));
  for (size_t size : {size_t{0}, size_t{131072}, size_t{131073}, size_t{5 << 20}}) {
    for (CompressMode mode : {CompressMode::kNo, CompressMode::kYes, CompressMode::kAuto}) {
      std::string content = TextBytes(size + static_cast<int>(mode), size);
      StringSource packed_source(content);
      auto packed = c->PutPackedStream(packed_source, mode);
      PS_ASSERT_OK(packed);
      EXPECT_EQ(packed->key, Hasher::Hash(HashType::kSha256, content));
      EXPECT_EQ(packed->size, size);
      EXPECT_EQ(*c->Get(packed->key), content);
      StringSource loose_source(content);
      auto loose = c->PutLoose(loose_source);
      PS_ASSERT_OK(loose);
      EXPECT_EQ(loose->key, packed->key);
    }
  }
  ExpectValid(*c);
}

}  // namespace
}  // namespace packstore
