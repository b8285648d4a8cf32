// The C++ client library against a real packstored on a real socket.

#include "packstore/client.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "common/hasher.h"
#include "gtest/gtest.h"
#include "tests/client/daemon_process.h"
#include "tests/store/test_util.h"

namespace packstore::client {
namespace {

using packstore::testing::DaemonProcess;
using packstore::testing::RandomBytes;
using packstore::testing::TextBytes;

std::string Sha256(std::string_view data) {
  return packstore::Hasher::Hash(packstore::HashType::kSha256, data);
}

std::unique_ptr<Client> ConnectTo(const DaemonProcess& daemon, ClientOptions options = {}) {
  options.socket = daemon.socket();
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(options);
  EXPECT_TRUE(client.ok()) << client.status();
  if (!client.ok()) return nullptr;
  // The socket exists once bound; wait until the daemon answers.
  for (int i = 0; i < 300 && !(*client)->Status().ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return *std::move(client);
}

// Every ClientTest runs twice: through the fast path (the default) and
// through gRPC alone.
// Calls of `method` the daemon has counted.
uint64_t CallsOf(Client& client, std::string_view method) {
  absl::StatusOr<StoreStatus> status = client.Status();
  EXPECT_TRUE(status.ok()) << status.status();
  if (!status.ok()) return 0;
  const std::string field = "\"method\":\"" + std::string(method) + "\",\"calls\":\"";
  const size_t at = status->json.find(field);
  EXPECT_NE(at, std::string::npos) << status->json;
  if (at == std::string::npos) return 0;
  return std::stoull(status->json.substr(at + field.size()));
}

class ClientTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    ClientOptions options;
    options.fast_path = GetParam();
    client_ = ConnectTo(daemon_, options);
    ASSERT_NE(client_, nullptr);
  }

  std::string MustPut(std::string_view data, PutOptions options = {}) {
    absl::StatusOr<ObjectRef> ref = client_->Put(data, options);
    EXPECT_TRUE(ref.ok()) << ref.status();
    return ref.ok() ? ref->key : "";
  }

  DaemonProcess daemon_;
  std::unique_ptr<Client> client_;
};

TEST_P(ClientTest, PutAndGetInEveryModeReturnTheContentKey) {
  const std::vector<std::string> contents = {"", "hello", TextBytes(1, 100000),
                                             RandomBytes(2, 3 << 20)};
  for (PutMode mode : {PutMode::kDefault, PutMode::kAuto, PutMode::kLoose, PutMode::kPacked}) {
    for (Compression compression : {Compression::kNo, Compression::kYes, Compression::kAuto}) {
      for (const std::string& data : contents) {
        absl::StatusOr<ObjectRef> ref = client_->Put(data, {mode, compression});
        ASSERT_TRUE(ref.ok()) << ref.status();
        EXPECT_EQ(ref->key, Sha256(data));
        EXPECT_EQ(ref->size, data.size());
        absl::StatusOr<std::string> back = client_->Get(ref->key, /*verify=*/true);
        ASSERT_TRUE(back.ok()) << back.status();
        EXPECT_TRUE(*back == data) << "mode " << static_cast<int>(mode) << " size " << data.size();
      }
    }
  }
}

TEST_P(ClientTest, PutStreamAndPutFileStreamAnySize) {
  const std::string data = RandomBytes(3, (5 << 20) + 17);
  std::istringstream in(data);
  absl::StatusOr<ObjectRef> streamed = client_->PutStream(in, {PutMode::kPacked, Compression::kAuto});
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_EQ(streamed->key, Sha256(data));

  const std::string path = (daemon_.dir() / "input.bin").string();
  const std::string file_data = TextBytes(4, (9 << 20) + 3);
  std::ofstream(path, std::ios::binary) << file_data;
  absl::StatusOr<ObjectRef> from_file = client_->PutFile(path);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  EXPECT_EQ(from_file->key, Sha256(file_data));
  EXPECT_EQ(from_file->size, file_data.size());
  EXPECT_EQ(*client_->Get(from_file->key), file_data);

  absl::StatusOr<ObjectRef> missing = client_->PutFile(path + ".missing");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->PutFile(daemon_.dir().string()).status().code(),
            absl::StatusCode::kInvalidArgument);

  // A source that fails cancels the upload; nothing is stored.
  int calls = 0;
  absl::StatusOr<ObjectRef> failed = client_->PutStream([&](char* buffer, size_t n) -> absl::StatusOr<size_t> {
    if (++calls > 2) return absl::DataLossError("source broke");
    std::fill(buffer, buffer + n, 'z');
    return n;
  });
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(failed.status().message(), "source broke");
}

TEST_P(ClientTest, PutManyReturnsKeysInOrderIncludingLargeObjects) {
  std::vector<std::string> objects;
  for (int i = 0; i < 5000; ++i) objects.push_back(RandomBytes(100 + i, 1000 + i % 200));
  objects.insert(objects.begin() + 2500, RandomBytes(7, (2 << 20) + 5));
  objects.push_back("");
  objects.push_back(objects[10]);  // a duplicate
  std::vector<std::string_view> views(objects.begin(), objects.end());
  absl::StatusOr<std::vector<ObjectRef>> refs = client_->PutMany(views, {PutMode::kPacked, {}});
  ASSERT_TRUE(refs.ok()) << refs.status();
  ASSERT_EQ(refs->size(), objects.size());
  std::vector<std::string> keys;
  for (size_t i = 0; i < objects.size(); ++i) {
    EXPECT_EQ((*refs)[i].key, Sha256(objects[i])) << i;
    EXPECT_EQ((*refs)[i].size, objects[i].size());
    keys.push_back((*refs)[i].key);
  }
  absl::StatusOr<std::vector<bool>> present = client_->Has(keys);
  ASSERT_TRUE(present.ok()) << present.status();
  EXPECT_EQ(std::count(present->begin(), present->end(), true),
            static_cast<long>(objects.size()));
}

TEST_P(ClientTest, ReaderStreamsSeeksAndReadsRanges) {
  const std::string data = RandomBytes(8, (4 << 20) + 12345);
  const std::string key = MustPut(data, {PutMode::kPacked, Compression::kYes});
  absl::StatusOr<std::unique_ptr<ObjectReader>> opened = client_->Open(key);
  ASSERT_TRUE(opened.ok()) << opened.status();
  ObjectReader& reader = **opened;
  EXPECT_EQ(reader.size(), data.size());
  EXPECT_TRUE(reader.info().packed);

  // Sequential reads of odd sizes.
  std::string whole;
  std::vector<char> buffer(77777);
  while (true) {
    absl::StatusOr<size_t> n = reader.Read(buffer.data(), buffer.size());
    ASSERT_TRUE(n.ok()) << n.status();
    if (*n == 0) break;
    whole.append(buffer.data(), *n);
  }
  EXPECT_TRUE(whole == data);
  EXPECT_EQ(reader.Tell(), data.size());

  // Random seeks, forwards and backwards.
  std::mt19937_64 rng(9);
  for (int i = 0; i < 40; ++i) {
    const uint64_t offset = rng() % data.size();
    const size_t want = 1 + rng() % 300000;
    reader.Seek(offset);
    std::string got;
    while (got.size() < want) {
      absl::StatusOr<size_t> n = reader.Read(buffer.data(), std::min(buffer.size(), want - got.size()));
      ASSERT_TRUE(n.ok()) << n.status();
      if (*n == 0) break;
      got.append(buffer.data(), *n);
    }
    EXPECT_TRUE(got == data.substr(offset, want)) << "offset " << offset << " length " << want;
    EXPECT_EQ(reader.Tell(), offset + got.size());
  }

  char small[100];
  absl::StatusOr<size_t> at = reader.ReadAt(data.size() - 10, small, sizeof small);
  ASSERT_TRUE(at.ok());
  EXPECT_EQ(std::string(small, *at), data.substr(data.size() - 10));
  reader.Seek(data.size() + 5);
  EXPECT_EQ(*reader.Read(small, sizeof small), 0u);

  EXPECT_EQ(*client_->GetRange(key, 1000, 50), data.substr(1000, 50));
  EXPECT_EQ(*client_->GetRange(key, data.size() - 3, 50), data.substr(data.size() - 3));
  EXPECT_EQ(client_->Open(Sha256("not stored")).status().code(), absl::StatusCode::kNotFound);
}

TEST_P(ClientTest, GetManyDeliversEachKeyOnceMissingOnesReported) {
  std::map<std::string, std::string> stored;
  for (int i = 0; i < 300; ++i) {
    std::string data = RandomBytes(1000 + i, i == 7 ? (3 << 20) + 1 : 500 + i);
    stored[MustPut(data, {PutMode::kPacked, Compression::kAuto})] = data;
  }
  std::vector<std::string> keys;
  for (const auto& [key, data] : stored) keys.push_back(key);
  const std::string absent = Sha256("absent");
  keys.push_back(absent);
  keys.push_back(keys.front());  // asked twice, delivered once

  std::map<std::string, std::string> got;
  std::set<std::string> missing;
  absl::Status status = client_->GetMany(keys, [&](const ObjectPiece& piece) {
    if (piece.missing) {
      missing.insert(std::string(piece.key));
      return absl::OkStatus();
    }
    std::string& out = got[std::string(piece.key)];
    EXPECT_EQ(piece.offset, out.size()) << "pieces in order, contiguous";
    out.append(piece.data);
    return absl::OkStatus();
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(missing, std::set<std::string>{absent});
  EXPECT_EQ(got.size(), stored.size());
  for (const auto& [key, data] : stored) EXPECT_TRUE(got[key] == data) << key;

  // A callback error cancels the call and comes back.
  int seen = 0;
  status = client_->GetMany(keys, [&](const ObjectPiece&) {
    return ++seen == 3 ? absl::CancelledError("enough") : absl::OkStatus();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(seen, 3);
}

TEST_P(ClientTest, GetManyOfSeveralBatches) {
  // More keys than one request (or LOCATE) takes: the batches after the
  // first are asked while the one before is being delivered.
  std::vector<std::string> objects;
  for (int i = 0; i < 21000; ++i) objects.push_back("object " + std::to_string(i));
  const std::vector<std::string_view> views(objects.begin(), objects.end());
  absl::StatusOr<std::vector<ObjectRef>> refs = client_->PutMany(views, {PutMode::kPacked, {}});
  ASSERT_TRUE(refs.ok()) << refs.status();
  std::vector<std::string> keys;
  std::map<std::string, std::string> stored;
  for (size_t i = 0; i < objects.size(); ++i) {
    keys.push_back((*refs)[i].key);
    stored[(*refs)[i].key] = objects[i];
  }
  const std::set<std::string> absent = {Sha256("absent 1"), Sha256("absent 2")};
  keys.insert(keys.begin() + 12345, *absent.begin());
  keys.push_back(*absent.rbegin());

  std::map<std::string, std::string> got;
  std::set<std::string> missing;
  size_t pieces = 0;
  absl::Status status = client_->GetMany(keys, [&](const ObjectPiece& piece) {
    ++pieces;
    if (piece.missing) {
      missing.insert(std::string(piece.key));
    } else {
      got[std::string(piece.key)] = piece.data;
    }
    return absl::OkStatus();
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(pieces, keys.size());
  EXPECT_EQ(missing, absent);
  EXPECT_TRUE(got == stored);

  // A callback error in the second batch (while the third is asked for)
  // ends the call.
  size_t seen = 0;
  status = client_->GetMany(keys, [&](const ObjectPiece&) {
    return ++seen == 15000 ? absl::CancelledError("enough") : absl::OkStatus();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(seen, 15000u);
  // Through the fast path, not one GetMany call.
  if (GetParam()) {
    EXPECT_EQ(CallsOf(*client_, "GetMany"), 0u);
  }
}

TEST_P(ClientTest, StatHasListAndStatus) {
  const std::string packed = MustPut("packed object", {PutMode::kPacked, Compression::kYes});
  const std::string loose = MustPut("loose object", {PutMode::kLoose, {}});
  const std::string absent = Sha256("absent");
  const std::vector<std::string> keys = {packed, loose, absent};
  absl::StatusOr<std::vector<std::optional<ObjectInfo>>> stats = client_->Stat(keys);
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_EQ(stats->size(), 3u);
  ASSERT_TRUE((*stats)[0] && (*stats)[1]);
  EXPECT_TRUE((*stats)[0]->packed);
  EXPECT_EQ((*stats)[0]->size, 13u);
  EXPECT_FALSE((*stats)[1]->packed);
  EXPECT_FALSE((*stats)[2].has_value());
  EXPECT_EQ(*client_->Has(keys), (std::vector<bool>{true, true, false}));

  std::vector<std::string> more;
  for (int i = 0; i < 2500; ++i) more.push_back("object " + std::to_string(i));
  std::vector<std::string_view> views(more.begin(), more.end());
  ASSERT_TRUE(client_->PutMany(views).ok());
  std::vector<std::string> listed;
  ASSERT_TRUE(client_->List([&](std::span<const std::string> page) {
    listed.insert(listed.end(), page.begin(), page.end());
    return absl::OkStatus();
  }).ok());
  EXPECT_EQ(listed.size(), 2502u);
  EXPECT_TRUE(std::is_sorted(listed.begin(), listed.end()));
  std::vector<std::string> after;
  ASSERT_TRUE(client_->List([&](std::span<const std::string> page) {
    after.insert(after.end(), page.begin(), page.end());
    return absl::OkStatus();
  }, listed[1000]).ok());
  EXPECT_EQ(after, std::vector<std::string>(listed.begin() + 1001, listed.end()));

  absl::StatusOr<StoreStatus> status = client_->Status();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->packed_objects + status->loose_objects, 2502u);
  EXPECT_EQ(status->hash_type, "sha256");
  EXPECT_EQ(status->container_id.size(), 32u);
  EXPECT_EQ(std::filesystem::path(status->container_dir), std::filesystem::path(daemon_.store()));
  EXPECT_NE(status->json.find("\"counts\""), std::string::npos);
  EXPECT_NE(status->json.find("\"rpcs\""), std::string::npos);
}

TEST_P(ClientTest, MaintenanceReportsProgressAndResults) {
  std::vector<std::string> keys;
  for (int i = 0; i < 200; ++i) keys.push_back(MustPut(TextBytes(i, 2000 + i), {PutMode::kLoose, {}}));
  std::vector<Progress> progress;
  absl::StatusOr<PackResult> packed =
      client_->Pack({Compression::kAuto, true}, [&](const Progress& p) { progress.push_back(p); });
  ASSERT_TRUE(packed.ok()) << packed.status();
  EXPECT_EQ(packed->packed, 200u);
  EXPECT_TRUE(packed->corrupt.empty());
  EXPECT_FALSE(progress.empty());
  absl::StatusOr<CleanResult> cleaned = client_->Clean(true);
  ASSERT_TRUE(cleaned.ok()) << cleaned.status();
  // Packing deletes the loose copies it packed, or leaves them to Clean.
  EXPECT_EQ(packed->loose_deleted + cleaned->loose_deleted, 200u);
  EXPECT_EQ(client_->Status()->loose_objects, 0u);

  absl::StatusOr<uint64_t> deleted =
      client_->Delete(std::vector<std::string>(keys.begin(), keys.begin() + 50));
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, 50u);
  absl::StatusOr<RepackResult> repacked = client_->Repack();
  ASSERT_TRUE(repacked.ok()) << repacked.status();
  EXPECT_EQ(repacked->objects_moved, 150u);
  absl::StatusOr<ValidateResult> valid = client_->Validate();
  ASSERT_TRUE(valid.ok()) << valid.status();
  EXPECT_EQ(valid->packed_checked, 150u);
  EXPECT_TRUE(valid->issues.empty());
  for (size_t i = 50; i < keys.size(); ++i) EXPECT_EQ(*client_->Get(keys[i]), TextBytes(i, 2000 + i));
  EXPECT_EQ(client_->Get(keys[0]).status().code(), absl::StatusCode::kNotFound);
}

TEST_P(ClientTest, ErrorsCarryTheDaemonsCodeAndMessage) {
  absl::StatusOr<std::string> malformed = client_->Get("../../etc/passwd");
  EXPECT_EQ(malformed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(malformed.status().message().empty());
  absl::StatusOr<std::string> missing = client_->Get(Sha256("nothing"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->Has(std::vector<std::string>{"ABC"}).status().code(),
            absl::StatusCode::kInvalidArgument);

  absl::StatusOr<std::unique_ptr<Client>> nowhere =
      Client::Connect(ClientOptions{.socket = (daemon_.dir() / "no.sock").string(),
                                     .timeout = {},
                                     .maintenance_timeout = {},
                                     .max_attempts = 3});
  EXPECT_EQ(nowhere.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(nowhere.status().message().find("no.sock"), std::string_view::npos);
  EXPECT_NE(nowhere.status().message().find("PACKSTORE_SOCKET"), std::string_view::npos);
}

INSTANTIATE_TEST_SUITE_P(FastPathAndGrpc, ClientTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "FastPath" : "GrpcOnly";
                         });

TEST(FastPathTest, ReadsAndPutFileBypassGrpc) {
  DaemonProcess daemon;
  std::unique_ptr<Client> client = ConnectTo(daemon);
  ASSERT_NE(client, nullptr);
  std::vector<std::string> keys;
  std::map<std::string, std::string> stored;
  for (int i = 0; i < 50; ++i) {
    std::string data = i == 4 ? RandomBytes(i, (3 << 20) + 1) : TextBytes(i, 500 + 100 * i);
    const PutMode mode = i % 5 == 0 ? PutMode::kLoose : PutMode::kPacked;
    absl::StatusOr<ObjectRef> ref =
        client->Put(data, {mode, i % 2 ? Compression::kYes : Compression::kNo});
    ASSERT_TRUE(ref.ok()) << ref.status();
    keys.push_back(ref->key);
    stored[ref->key] = data;
  }
  const uint64_t gets = CallsOf(*client, "Get");
  const uint64_t streams = CallsOf(*client, "PutStream");
  for (const auto& [key, data] : stored) EXPECT_TRUE(*client->Get(key) == data);
  std::map<std::string, std::string> many;
  ASSERT_TRUE(client->GetMany(keys, [&](const ObjectPiece& piece) {
    EXPECT_FALSE(piece.missing);
    many[std::string(piece.key)].append(piece.data);
    return absl::OkStatus();
  }).ok());
  EXPECT_EQ(many, stored);
  // The large one is stored uncompressed: its reader reads the descriptor.
  absl::StatusOr<std::unique_ptr<ObjectReader>> reader = client->Open(keys[4]);
  ASSERT_TRUE(reader.ok()) << reader.status();
  char tail[10];
  EXPECT_EQ(*(*reader)->ReadAt(stored[keys[4]].size() - 10, tail, sizeof tail), 10u);
  EXPECT_EQ(std::string(tail, 10), stored[keys[4]].substr(stored[keys[4]].size() - 10));

  const std::string path = (daemon.dir() / "file.bin").string();
  const std::string file_data = RandomBytes(77, (5 << 20) + 3);
  std::ofstream(path, std::ios::binary) << file_data;
  absl::StatusOr<ObjectRef> from_file = client->PutFile(path);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  EXPECT_EQ(from_file->key, Sha256(file_data));
  EXPECT_TRUE(*client->Get(from_file->key) == file_data);

  // Not one byte of these reads and of PutFile went through gRPC.
  EXPECT_EQ(CallsOf(*client, "Get"), gets);
  EXPECT_EQ(CallsOf(*client, "GetMany"), 0u);
  EXPECT_EQ(CallsOf(*client, "PutStream"), streams);
}

TEST(FastPathTest, HeldDescriptorsReadTheRightBytesThroughRepackAndClean) {
  DaemonProcess daemon;
  std::unique_ptr<Client> client = ConnectTo(daemon);
  ASSERT_NE(client, nullptr);
  std::vector<std::string> keys, contents;
  for (int i = 0; i < 300; ++i) {
    contents.push_back(RandomBytes(1000 + i, 4000 + i));
    absl::StatusOr<ObjectRef> ref =
        client->Put(contents.back(), {i < 100 ? PutMode::kLoose : PutMode::kPacked, {}});
    ASSERT_TRUE(ref.ok()) << ref.status();
    keys.push_back(ref->key);
  }
  // Readers opened now: on loose files (0-99) and on the first pack.
  std::vector<std::unique_ptr<ObjectReader>> readers;
  for (int i = 0; i < 300; i += 7) readers.push_back(*client->Open(keys[i]));
  // Every other packed object deleted, then packed, cleaned and repacked:
  // the loose files are unlinked and the pack is replaced by a new file.
  std::vector<std::string> doomed;
  for (int i = 101; i < 300; i += 2) doomed.push_back(keys[i]);
  ASSERT_TRUE(client->Delete(doomed).ok());
  ASSERT_TRUE(client->Pack().ok());
  ASSERT_TRUE(client->Clean().ok());
  absl::StatusOr<RepackResult> repacked = client->Repack();
  ASSERT_TRUE(repacked.ok()) << repacked.status();
  EXPECT_GT(repacked->bytes_reclaimed, 0u);
  for (size_t r = 0; r < readers.size(); ++r) {
    const std::string& want = contents[r * 7];
    std::string got(want.size(), '\0');
    absl::StatusOr<size_t> n = readers[r]->ReadAt(0, got.data(), got.size());
    ASSERT_TRUE(n.ok()) << n.status();
    EXPECT_EQ(*n, want.size());
    EXPECT_TRUE(got == want) << "reader " << r << " read wrong bytes after repack and clean";
  }
  // And new reads find the objects where they are now.
  for (size_t i = 0; i < keys.size(); ++i) {
    const bool deleted = i > 100 && i % 2 == 1;
    absl::StatusOr<std::string> data = client->Get(keys[i]);
    if (deleted) {
      EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
    } else {
      EXPECT_TRUE(data.ok() && *data == contents[i]) << i;
    }
  }
}

TEST(FastPathTest, FallsBackToGrpcWhenTheDaemonTurnsItOff) {
  DaemonProcess daemon({"--fast-path", "false"});
  std::unique_ptr<Client> client = ConnectTo(daemon);
  ASSERT_NE(client, nullptr);
  const std::string data = TextBytes(5, 100000);
  absl::StatusOr<ObjectRef> ref = client->Put(data, {PutMode::kPacked, Compression::kYes});
  ASSERT_TRUE(ref.ok());
  EXPECT_TRUE(*client->Get(ref->key) == data);
  EXPECT_TRUE(*client->Get(ref->key) == data);
  EXPECT_EQ(CallsOf(*client, "Get"), 2u);
}

TEST(ClientDaemonTest, MaintenanceNeedsAnAdmin) {
  DaemonProcess daemon({"--admin-uid", std::to_string(getuid() + 1)});
  std::unique_ptr<Client> client = ConnectTo(daemon);
  ASSERT_NE(client, nullptr);
  EXPECT_TRUE(client->Put("reads and writes are still allowed").ok());
  absl::StatusOr<ValidateResult> refused = client->Validate();
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(refused.status().message().find("admin"), std::string_view::npos);
}

TEST(ClientDaemonTest, LimitsComeBackAsResourceExhausted) {
  DaemonProcess daemon({"--max-object-size", "64KiB"});
  std::unique_ptr<Client> client = ConnectTo(daemon);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->Put(std::string(65 << 10, 'x')).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(client->Put(std::string(3 << 20, 'x')).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(client->Put(std::string(64 << 10, 'x')).ok());
}

TEST(ClientDaemonTest, AGoneDaemonIsUnavailableAfterRetriesAndDeadlinesHold) {
  DaemonProcess daemon;
  std::unique_ptr<Client> client = ConnectTo(daemon, ClientOptions{.socket = "",
                                                              .timeout = std::chrono::seconds(5),
                                                              .maintenance_timeout = {},
                                                              .max_attempts = 3});
  ASSERT_NE(client, nullptr);
  const std::string key = client->Put("before the daemon went away")->key;
  daemon.Kill();
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> gone = client->Get(key);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(gone.status().message().find(daemon.socket()), std::string_view::npos);
  // Three attempts with 50 ms and 200 ms between them.
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(250));
}

TEST_P(ClientTest, OneClientSharedByManyThreads) {
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        const std::string data = RandomBytes(t * 1000 + i, 100 + i * 37);
        absl::StatusOr<ObjectRef> ref =
            client_->Put(data, {i % 2 ? PutMode::kPacked : PutMode::kLoose, Compression::kAuto});
        if (!ref.ok() || ref->key != Sha256(data)) ++failures;
        absl::StatusOr<std::string> back = client_->Get(ref.ok() ? ref->key : "");
        if (!back.ok() || *back != data) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace
}  // namespace packstore::client
