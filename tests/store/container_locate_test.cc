// Container::Locate: descriptors and locations for a reader outside the
// engine, which must keep reading the right bytes while the container packs,
// cleans, deletes and repacks.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/codec.h"
#include "common/hasher.h"
#include "common/status_util.h"
#include "gtest/gtest.h"
#include "server/store/container.h"
#include "server/store/file_io.h"
#include "tests/store/test_util.h"

namespace packstore {
namespace {

using ::packstore::testing::RandomBytes;
using ::packstore::testing::TempDir;
using ::packstore::testing::TextBytes;
using State = ObjectLocation::State;

std::unique_ptr<Container> MakeContainer(const std::string& dir, InitOptions options = {}) {
  absl::Status init = Container::Init(dir, options);
  EXPECT_TRUE(init.ok()) << init;
  auto opened = Container::Open(dir);
  EXPECT_TRUE(opened.ok()) << opened.status();
  return opened.ok() ? std::move(*opened) : nullptr;
}

// The content of a located object, read the way a client would: pread of
// the stored bytes, then decompression.
absl::StatusOr<std::string> ReadLocated(int fd, const ObjectLocation& location) {
  std::string stored(location.length, '\0');
  PACKSTORE_RETURN_IF_ERROR(PreadExact(fd, stored.data(), stored.size(), location.offset));
  if (!location.codec) return stored;
  return DecompressAll(*location.codec, stored, location.size);
}

std::string ReadLocatedOrFail(const LocateResult& result, size_t i) {
  const ObjectLocation& location = result.objects[i];
  EXPECT_EQ(location.state, State::kFound);
  if (location.state != State::kFound) return {};
  EXPECT_LT(location.file, result.files.size());
  auto content = ReadLocated(result.files[location.file].get(), location);
  EXPECT_TRUE(content.ok()) << content.status();
  return content.value_or("");
}

ino_t InodeOf(int fd) {
  struct stat st;
  EXPECT_EQ(::fstat(fd, &st), 0);
  return st.st_ino;
}

TEST(ContainerLocateTest, PackedCompressedLooseAndMissing) {
  TempDir tmp;
  auto c = MakeContainer(tmp.Sub("c"));
  ASSERT_NE(c, nullptr);
  const std::string plain = RandomBytes(1, 5000);
  const std::string text = TextBytes(2, 200000);
  const std::string loose = RandomBytes(3, 70000);
  auto plain_written = c->PutPacked({plain});
  PS_ASSERT_OK(plain_written);
  auto text_written = c->PutPacked({text}, CompressMode::kYes);
  PS_ASSERT_OK(text_written);
  auto loose_written = c->PutLoose(loose);
  PS_ASSERT_OK(loose_written);
  auto empty_written = c->PutLoose("");
  PS_ASSERT_OK(empty_written);
  const std::string missing(64, '0');

  std::vector<std::string> keys = {(*plain_written)[0].key, (*text_written)[0].key,
                                   loose_written->key,      missing,
                                   empty_written->key,      loose_written->key};
  auto result = c->Locate(keys, 250);
  PS_ASSERT_OK(result);
  ASSERT_EQ(result->objects.size(), keys.size());
  // One pack, two loose files; the key asked twice shares its file.
  EXPECT_EQ(result->files.size(), 3u);

  const ObjectLocation& p = result->objects[0];
  EXPECT_FALSE(p.codec.has_value());
  EXPECT_EQ(p.length, plain.size());
  EXPECT_EQ(p.size, plain.size());
  EXPECT_EQ(ReadLocatedOrFail(*result, 0), plain);

  const ObjectLocation& t = result->objects[1];
  ASSERT_TRUE(t.codec.has_value());
  EXPECT_EQ(*t.codec, CodecKind::kZlib);
  EXPECT_LT(t.length, text.size());
  EXPECT_EQ(t.size, text.size());
  EXPECT_EQ(t.file, p.file) << "objects of one pack share a descriptor";
  EXPECT_EQ(ReadLocatedOrFail(*result, 1), text);

  const ObjectLocation& l = result->objects[2];
  EXPECT_EQ(l.offset, 0u);
  EXPECT_EQ(l.length, loose.size());
  EXPECT_FALSE(l.codec.has_value());
  EXPECT_NE(l.file, p.file);
  EXPECT_EQ(ReadLocatedOrFail(*result, 2), loose);

  EXPECT_EQ(result->objects[3].state, State::kMissing);
  EXPECT_EQ(ReadLocatedOrFail(*result, 4), "");
  EXPECT_EQ(result->objects[5].file, l.file);

  for (const UniqueFd& fd : result->files) {
    EXPECT_EQ(::fcntl(fd.get(), F_GETFL) & O_ACCMODE, O_RDONLY);
    EXPECT_TRUE(::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC);
  }
}

TEST(ContainerLocateTest, MalformedKeyIsRefusedBeforeAnyLookup) {
  TempDir tmp;
  auto c = MakeContainer(tmp.Sub("c"));
  ASSERT_NE(c, nullptr);
  for (const std::string& bad : {std::string("ABC"), std::string(64, 'A'),
                                 std::string("../../config.json"), std::string(63, '0')}) {
    auto result = c->Locate({std::string(64, '0'), bad}, 250);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ContainerLocateTest, DescriptorsPastTheLimitAreDeferredPacksFirst) {
  TempDir tmp;
  auto c = MakeContainer(tmp.Sub("c"));
  ASSERT_NE(c, nullptr);
  std::vector<std::string> keys;
  std::vector<std::string> contents;
  for (int i = 0; i < 5; ++i) {
    contents.push_back(RandomBytes(10 + i, 100 + i));
    auto written = c->PutLoose(contents.back());
    PS_ASSERT_OK(written);
    keys.push_back(written->key);
  }
  contents.push_back("packed last");
  auto packed = c->PutPacked({contents.back()});
  PS_ASSERT_OK(packed);
  keys.push_back((*packed)[0].key);

  auto result = c->Locate(keys, 3);
  PS_ASSERT_OK(result);
  ASSERT_EQ(result->files.size(), 3u);
  // The pack first, then the loose objects in order until the limit.
  EXPECT_EQ(ReadLocatedOrFail(*result, 5), contents[5]);
  EXPECT_EQ(ReadLocatedOrFail(*result, 0), contents[0]);
  EXPECT_EQ(ReadLocatedOrFail(*result, 1), contents[1]);
  for (int i : {2, 3, 4}) EXPECT_EQ(result->objects[i].state, State::kDeferred) << i;

  auto none = c->Locate(keys, 0);
  PS_ASSERT_OK(none);
  EXPECT_TRUE(none->files.empty());
  for (const ObjectLocation& location : none->objects) EXPECT_EQ(location.state, State::kDeferred);
}

TEST(ContainerLocateTest, HeldDescriptorsReadTheSameBytesAfterDeleteRepackCleanAndPack) {
  TempDir tmp;
  auto c = MakeContainer(tmp.Sub("c"));
  ASSERT_NE(c, nullptr);
  std::vector<std::string> packed_contents;
  for (int i = 0; i < 8; ++i) packed_contents.push_back(RandomBytes(100 + i, 3000 + i));
  std::vector<std::string_view> views(packed_contents.begin(), packed_contents.end());
  auto packed = c->PutPacked(views);
  PS_ASSERT_OK(packed);
  const std::string loose = TextBytes(200, 50000);
  auto loose_written = c->PutLoose(loose);
  PS_ASSERT_OK(loose_written);

  std::vector<std::string> keys;
  for (const WrittenObject& w : *packed) keys.push_back(w.key);
  keys.push_back(loose_written->key);
  auto held = c->Locate(keys, 250);
  PS_ASSERT_OK(held);
  ASSERT_EQ(held->files.size(), 2u);
  const ino_t old_pack = InodeOf(held->files[held->objects[0].file].get());

  // Pack 0 is rewritten into a new file and unlinked; the loose object is
  // packed and its file removed; new objects then reuse pack id 0.
  PS_ASSERT_OK(c->Delete({keys[0], keys[3]}));
  auto repacked = c->Repack({});
  PS_ASSERT_OK(repacked);
  EXPECT_EQ(repacked->packs_rewritten, 1u);
  PS_ASSERT_OK(c->PackAllLoose({}));
  PS_ASSERT_OK(c->Clean({}));
  PS_ASSERT_OK(c->PutPacked({"written after the repack"}));
  PS_ASSERT_OK(c->Repack({.compress = CompressMode::kYes}));

  for (size_t i = 0; i < packed_contents.size(); ++i) {
    EXPECT_EQ(ReadLocatedOrFail(*held, i), packed_contents[i]) << i;
  }
  EXPECT_EQ(ReadLocatedOrFail(*held, 8), loose);

  // A new lookup finds the new files and the new (compressed) locations.
  auto fresh = c->Locate(keys, 250);
  PS_ASSERT_OK(fresh);
  EXPECT_EQ(fresh->objects[0].state, State::kMissing);
  EXPECT_EQ(fresh->objects[3].state, State::kMissing);
  for (size_t i : {1, 2, 4, 5, 6, 7}) {
    EXPECT_EQ(ReadLocatedOrFail(*fresh, i), packed_contents[i]) << i;
    EXPECT_TRUE(fresh->objects[i].codec.has_value());
  }
  EXPECT_EQ(ReadLocatedOrFail(*fresh, 8), loose);
  EXPECT_NE(InodeOf(fresh->files[fresh->objects[1].file].get()), old_pack);
}

// Readers locate and read while the writer packs, cleans and repacks in a
// loop: every located object must read as its key says, through the
// writer's own (cached) table and through a shared opener beside it.
TEST(ContainerLocateTest, LocationsStayCorrectUnderConcurrentMaintenance) {
  TempDir tmp;
  InitOptions init;
  init.pack_size_target = 64 << 10;  // several packs, so repacks reuse ids
  auto c = MakeContainer(tmp.Sub("c"), init);
  ASSERT_NE(c, nullptr);
  auto shared = Container::Open(tmp.Sub("c"), OpenMode::kShared);
  PS_ASSERT_OK(shared);

  std::vector<std::string> keys;
  std::vector<std::string> contents;
  for (int i = 0; i < 60; ++i) {
    contents.push_back(i % 2 ? TextBytes(300 + i, 4000 + 37 * i) : RandomBytes(300 + i, 2000 + i));
    auto written = c->PutLoose(contents.back());
    PS_ASSERT_OK(written);
    keys.push_back(written->key);
  }

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> located{0};
  std::thread maintenance([&] {
    for (int round = 0; round < 30; ++round) {
      CompressMode mode = round % 3 == 0 ? CompressMode::kYes : CompressMode::kNo;
      EXPECT_TRUE(c->PackAllLoose({.compress = mode, .delete_loose = round % 2 == 0}).ok());
      EXPECT_TRUE(c->Clean({}).ok());
      // Delete a few and put them back loose, so objects move both ways.
      std::vector<std::string> victims = {keys[round % keys.size()],
                                          keys[(round * 7) % keys.size()]};
      EXPECT_TRUE(c->Delete(victims).ok());
      EXPECT_TRUE(c->Repack({.compress = round % 2 ? CompressMode::kYes : CompressMode::kNo}).ok());
      EXPECT_TRUE(c->PutLoose(contents[round % keys.size()]).ok());
      EXPECT_TRUE(c->PutLoose(contents[(round * 7) % keys.size()]).ok());
    }
    stop = true;
  });
  auto reader = [&](Container* container) {
    while (!stop) {
      auto result = container->Locate(keys, 250);
      if (!result.ok()) {
        // A shared opener may give up while the writer keeps moving rows.
        EXPECT_TRUE(container != c.get() && absl::IsUnavailable(result.status()))
            << result.status();
        continue;
      }
      for (size_t i = 0; i < keys.size(); ++i) {
        const ObjectLocation& location = result->objects[i];
        ASSERT_NE(location.state, State::kDeferred);
        if (location.state == State::kMissing) continue;  // deleted just now
        auto content = ReadLocated(result->files[location.file].get(), location);
        ASSERT_TRUE(content.ok()) << content.status();
        ASSERT_EQ(Hasher::Hash(HashType::kSha256, *content), keys[i]);
        located.fetch_add(1);
      }
    }
  };
  std::thread writer_reader(reader, c.get());
  std::thread shared_reader(reader, shared->get());
  maintenance.join();
  writer_reader.join();
  shared_reader.join();
  EXPECT_GT(located.load(), 0u);
}

}  // namespace
}  // namespace packstore
