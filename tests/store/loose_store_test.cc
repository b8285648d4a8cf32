// Loose objects: paths for each prefix length, strays, and sandbox cleanup
// that never removes a file a writer holds.
#include "server/store/loose_store.h"

#include <sys/file.h>
#include <sys/stat.h>
#include <utime.h>

#include "common/hasher.h"
#include "gtest/gtest.h"
#include "server/store/pack_files.h"
#include "tests/store/test_util.h"

namespace packstore {
namespace {

using ::packstore::testing::TempDir;

void MakeFolders(const TempDir& tmp) {
  for (const char* sub : {"loose", "sandbox", "packs"}) ASSERT_TRUE(MakeDir(tmp.Sub(sub)).ok());
}

TEST(LooseStoreTest, PathsFollowThePrefixLength) {
  std::string key = Hasher::Hash(HashType::kSha256, "a");
  EXPECT_EQ(LooseStore("c", 0, HashType::kSha256).PathFor(key), "c/loose/" + key);
  EXPECT_EQ(LooseStore("c", 2, HashType::kSha256).PathFor(key),
            "c/loose/" + key.substr(0, 2) + "/" + key.substr(2));
  EXPECT_EQ(LooseStore("c", 3, HashType::kSha256).PathFor(key),
            "c/loose/" + key.substr(0, 3) + "/" + key.substr(3));
}

TEST(LooseStoreTest, WriteListDeleteAndStrays) {
  TempDir tmp;
  MakeFolders(tmp);
  LooseStore store(tmp.path(), 2, HashType::kSha256);
  auto written = store.Write(*std::make_unique<StringSource>("hello"));
  PS_ASSERT_OK(written);
  EXPECT_EQ(written->key, Hasher::Hash(HashType::kSha256, "hello"));
  EXPECT_EQ(*store.Size(written->key), 5u);
  PS_ASSERT_OK(WriteAll(OpenFile(tmp.Sub("loose/") + written->key.substr(0, 2) + "/bad",
                                 O_WRONLY | O_CREAT)->get(), "x"));
  std::vector<std::string> keys, strays;
  PS_ASSERT_OK(store.ForEach(
      [&](const std::string& k) {
        keys.push_back(k);
        return absl::OkStatus();
      },
      [&](const std::string& p) { strays.push_back(p); }));
  EXPECT_EQ(keys, std::vector<std::string>{written->key});
  ASSERT_EQ(strays.size(), 1u);
  PS_ASSERT_OK(store.Delete(written->key));
  PS_ASSERT_OK(store.Delete(written->key));  // already gone is fine
  EXPECT_FALSE(store.Exists(written->key));
  auto files = ListDir(tmp.Sub("sandbox"));
  EXPECT_TRUE(files->empty());
}

TEST(LooseStoreTest, CleanSandboxKeepsLockedAndYoungForeignFiles) {
  TempDir tmp;
  MakeFolders(tmp);
  LooseStore store(tmp.path(), 2, HashType::kSha256);
  auto held = OpenFile(tmp.Sub("sandbox/ps-held"), O_WRONLY | O_CREAT);
  ASSERT_EQ(::flock(held->get(), LOCK_EX), 0);
  PS_ASSERT_OK(OpenFile(tmp.Sub("sandbox/ps-abandoned"), O_WRONLY | O_CREAT));
  PS_ASSERT_OK(OpenFile(tmp.Sub("sandbox/foreign-young"), O_WRONLY | O_CREAT));
  PS_ASSERT_OK(OpenFile(tmp.Sub("sandbox/foreign-old"), O_WRONLY | O_CREAT));
  struct utimbuf old_times = {1000, 1000};
  ASSERT_EQ(::utime(tmp.Sub("sandbox/foreign-old").c_str(), &old_times), 0);
  auto removed = store.CleanSandbox(3600);
  PS_ASSERT_OK(removed);
  EXPECT_EQ(*removed, 2u);
  EXPECT_TRUE(PathExists(tmp.Sub("sandbox/ps-held")));
  EXPECT_TRUE(PathExists(tmp.Sub("sandbox/foreign-young")));
  EXPECT_FALSE(PathExists(tmp.Sub("sandbox/ps-abandoned")));
  EXPECT_FALSE(PathExists(tmp.Sub("sandbox/foreign-old")));
}

TEST(PackFilesTest, PackNames) {
  EXPECT_EQ(ParsePackName("0"), 0);
  EXPECT_EQ(ParsePackName("17"), 17);
  EXPECT_EQ(ParsePackName("-1"), -1);
  for (const char* bad : {"", "01", "1.lock", "x", "-2", "1a", "99999999999999999999"}) {
    EXPECT_FALSE(ParsePackName(bad).has_value()) << bad;
  }
}

TEST(PackFilesTest, WriterHonoursAndReleasesPackLocks) {
  TempDir tmp;
  MakeFolders(tmp);
  PS_ASSERT_OK(OpenFile(tmp.Sub("packs/0.lock"), O_WRONLY | O_CREAT));  // another packer's
  PackWriter writer(tmp.Sub("packs"), 1000);
  auto pos = writer.BeginObject();
  EXPECT_EQ(pos.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(std::string(pos.status().message()).find("0.lock"), std::string::npos);
  EXPECT_TRUE(PathExists(tmp.Sub("packs/0.lock")));  // not ours: never removed
  writer.Abandon();
  PS_ASSERT_OK(Unlink(tmp.Sub("packs/0.lock")));
  pos = writer.BeginObject();
  PS_ASSERT_OK(pos);
  EXPECT_TRUE(PathExists(tmp.Sub("packs/0.lock")));
  PS_ASSERT_OK(writer.Write(std::string(1500, 'x')));
  EXPECT_EQ(writer.EndObject(), 1500u);
  pos = writer.BeginObject();  // pack 0 is past its target now
  PS_ASSERT_OK(pos);
  EXPECT_EQ(pos->pack_id, 1);
  EXPECT_EQ(pos->offset, 0u);
  PS_ASSERT_OK(writer.Write("y"));
  writer.EndObject();
  PS_ASSERT_OK(writer.Commit());
  EXPECT_FALSE(PathExists(tmp.Sub("packs/0.lock")));
  EXPECT_FALSE(PathExists(tmp.Sub("packs/1.lock")));
  EXPECT_EQ(*PathSize(tmp.Sub("packs/1")), 1u);
}

}  // namespace
}  // namespace packstore
