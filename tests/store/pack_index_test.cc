// packs.idx: the exact schema, WAL mode, and each query and mutation.
#include "server/store/pack_index.h"

#include <sqlite3.h>

#include <thread>

#include "gtest/gtest.h"
#include "tests/store/test_util.h"

namespace packstore {
namespace {

using ::packstore::testing::TempDir;

std::string Query(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK);
  std::string out;
  while (sqlite3_step(stmt) == SQLITE_ROW) {
    if (!out.empty()) out += "|";
    out += reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return out;
}

TEST(PackIndexTest, CreatesDiskObjectstoresSchemaInWalMode) {
  TempDir tmp;
  std::string path = tmp.Sub("packs.idx");
  PS_ASSERT_OK(PackIndex::Open(path, true));
  EXPECT_EQ(Query(path, "SELECT sql FROM sqlite_master WHERE type='table'"),
            std::string(PackIndex::kCreateTableSql));
  EXPECT_EQ(Query(path, "SELECT sql FROM sqlite_master WHERE type='index'"),
            std::string(PackIndex::kCreateIndexSql));
  EXPECT_EQ(Query(path, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(PackIndex::Open(path, true).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(PackIndex::Open(tmp.Sub("none"), false).status().code(), absl::StatusCode::kNotFound);
}

TEST(PackIndexTest, InsertLookupMoveDelete) {
  TempDir tmp;
  auto index = PackIndex::Open(tmp.Sub("packs.idx"), true);
  PS_ASSERT_OK(index);
  std::vector<IndexRow> rows = {{"aa", {0, 0, 10, 10, false}}, {"bb", {0, 10, 5, 20, true}},
                                {"cc", {1, 0, 7, 7, false}}};
  EXPECT_EQ(*(*index)->InsertRows(rows), 3u);
  // A key that has a row keeps it.
  EXPECT_EQ(*(*index)->InsertRows({{"aa", {5, 5, 5, 5, false}}}), 0u);
  auto aa = (*index)->Lookup("aa");
  PS_ASSERT_OK(aa);
  ASSERT_TRUE(aa->has_value());
  EXPECT_EQ((*aa)->pack_id, 0);
  EXPECT_EQ((*aa)->length, 10u);
  auto many = (*index)->LookupMany({"cc", "zz", "bb"});
  PS_ASSERT_OK(many);
  ASSERT_EQ(many->size(), 3u);
  EXPECT_EQ((*many)[0]->pack_id, 1);
  EXPECT_FALSE((*many)[1].has_value());
  EXPECT_TRUE((*many)[2]->compressed);
  EXPECT_EQ((*many)[2]->size, 20u);

  PS_ASSERT_OK((*index)->MoveRows({{"bb", {2, 100, 20, 20, false}}}));
  EXPECT_EQ((*(*index)->Lookup("bb"))->pack_id, 2);
  PS_ASSERT_OK((*index)->RenamePack(2, 7));
  EXPECT_EQ((*(*index)->Lookup("bb"))->pack_id, 7);
  auto lengths = (*index)->LengthPerPack();
  PS_ASSERT_OK(lengths);
  EXPECT_EQ(*lengths, (std::vector<std::pair<int64_t, uint64_t>>{{0, 10}, {1, 7}, {7, 20}}));

  EXPECT_EQ(*(*index)->DeleteRows({"aa", "zz"}), 1u);
  auto totals = (*index)->Totals();
  PS_ASSERT_OK(totals);
  EXPECT_EQ(totals->count, 2u);
  EXPECT_EQ(totals->total_size, 27u);
  EXPECT_EQ(totals->total_length, 27u);

  std::vector<std::string> keys;
  PS_ASSERT_OK((*index)->ForEachKey("", 0, [&](std::string_view k) {
    keys.emplace_back(k);
    return true;
  }));
  EXPECT_EQ(keys, (std::vector<std::string>{"bb", "cc"}));
  std::vector<std::string> ordered;
  PS_ASSERT_OK((*index)->ForEachRow(std::nullopt, [&](const IndexRow& row) {
    ordered.push_back(row.key);
    return absl::OkStatus();
  }));
  EXPECT_EQ(ordered, (std::vector<std::string>{"cc", "bb"}));  // by pack, then offset
  PS_ASSERT_OK((*index)->Vacuum());
  PS_ASSERT_OK((*index)->Checkpoint());
}

TEST(PackIndexTest, ReadersSeeCommittedRowsFromOtherThreads) {
  TempDir tmp;
  auto index = PackIndex::Open(tmp.Sub("packs.idx"), true);
  PS_ASSERT_OK(index);
  std::thread reader([&] {
    for (int i = 0; i < 200; ++i) {
      auto found = (*index)->Lookup("k" + std::to_string(i));
      EXPECT_TRUE(found.ok()) << found.status();
    }
  });
  for (int i = 0; i < 200; ++i) {
    PS_EXPECT_OK((*index)->InsertRows({{"k" + std::to_string(i), {0, uint64_t(i), 1, 1, false}}}));
  }
  reader.join();
  EXPECT_TRUE((*(*index)->Lookup("k199")).has_value());
}

}  // namespace
}  // namespace packstore
