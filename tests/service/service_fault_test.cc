// The gRPC service over a real connection (set up as in service_test.cc)
// while the file system fails under it (server/cache/fault_injection.h,
// server/store/sqlite_fault_vfs.h): every write and maintenance call gets a
// gRPC status with the right code and a message naming what failed, reads
// and Status keep answering during the fault, the same call succeeds once
// it clears, nothing acknowledged is lost, and Validate stays clean.
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "common/str_cat.h"
#include "gtest/gtest.h"
#include "packstore/v1/packstore.grpc.pb.h"
#include "server/cache/fault_injection.h"
#include "server/service/service.h"
#include "server/store/container.h"
#include "server/store/sqlite_fault_vfs.h"
#include "tests/service/in_process_server.h"
#include "tests/store/test_util.h"

namespace packstore::service {
namespace {

namespace pb = ::packstore::v1;
using ::packstore::testing::InProcessServer;
using ::packstore::testing::RandomBytes;
using ::packstore::testing::Sha;
using ::packstore::testing::TempDir;
using ::packstore::testing::TextBytes;

constexpr int kErrors[] = {EIO, ENOSPC, EDQUOT};

grpc::StatusCode ExpectedCode(int error) {
  return error == EIO ? grpc::StatusCode::INTERNAL : grpc::StatusCode::RESOURCE_EXHAUSTED;
}

bool NamesWhatFailed(const std::string& message) {
  bool names_file = false;
  for (const char* where : {"pack", "loose", "sandbox", "duplicates"}) {
    names_file = names_file || message.find(where) != std::string::npos;
  }
  bool names_error = false;
  for (const char* error : {"Input/output error", "No space left", "Disk quota exceeded",
                            "disk I/O error", "database or disk is full"}) {
    names_error = names_error || message.find(error) != std::string::npos;
  }
  return names_file && names_error;
}

class ServiceFaultTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    grpc_init();
    ASSERT_TRUE(InstallSqliteFaultVfs().ok());
  }

  void SetUp() override {
    InitOptions init;
    init.pack_size_target = 256 << 10;  // batches and packs span several packs
    ASSERT_TRUE(Container::Init(dir_.Sub("store"), init).ok());
    auto container = Container::Open(dir_.Sub("store"));
    ASSERT_TRUE(container.ok()) << container.status();
    container_ = std::move(*container);
    ServiceOptions options;
    options.access.admin_uids = {getuid()};
    service_ = ObjectStoreService::Create(container_.get(), &peers_, options);
    server_ = std::make_unique<InProcessServer>(service_.get(), &peers_, 64 << 20);
    ASSERT_TRUE(server_->started());
    std::shared_ptr<grpc::Channel> channel = server_->Connect({getuid(), getgid(), getpid()});
    ASSERT_NE(channel, nullptr) << "socketpair: " << std::strerror(errno);
    stub_ = pb::ObjectStore::NewStub(channel);
  }

  void TearDown() override {
    FaultInjector::Disarm();
    stub_.reset();
    if (server_) server_->Shutdown();
    if (service_) {
      EXPECT_TRUE(service_->Shutdown(absl::Now() + absl::Seconds(5)));
    }
    server_.reset();
    service_.reset();
    container_.reset();
  }

  std::string filter() const { return dir_.Sub("store") + "/"; }

  grpc::Status Put(const std::string& data, pb::PutMode mode, std::string* key) {
    grpc::ClientContext ctx;
    pb::PutRequest request;
    request.mutable_options()->set_mode(mode);
    request.set_data(data);
    pb::PutResponse response;
    grpc::Status status = stub_->Put(&ctx, request, &response);
    if (status.ok()) *key = response.object().key();
    return status;
  }

  grpc::Status PutStream(std::string_view data, pb::PutMode mode, std::string* key) {
    grpc::ClientContext ctx;
    pb::PutStreamResponse response;
    auto writer = stub_->PutStream(&ctx, &response);
    constexpr size_t kChunk = 256 << 10;
    size_t offset = 0;
    do {
      pb::PutStreamRequest message;
      if (offset == 0) message.mutable_options()->set_mode(mode);
      const size_t n = std::min(kChunk, data.size() - offset);
      message.set_data(std::string(data.substr(offset, n)));
      offset += n;
      message.set_finish_write(offset == data.size());
      if (!writer->Write(message)) break;
    } while (offset < data.size());
    writer->WritesDone();
    grpc::Status status = writer->Finish();
    if (status.ok()) *key = response.object().key();
    return status;
  }

  // One request message (one group-commit batch, so that the calls it
  // makes do not depend on how the batches fall); the keys when answered.
  grpc::Status PutMany(const std::vector<std::string>& objects, std::vector<std::string>* keys) {
    grpc::ClientContext ctx;
    auto stream = stub_->PutMany(&ctx);
    pb::PutManyRequest request;
    request.mutable_options()->set_mode(pb::PUT_MODE_PACKED);
    for (const std::string& object : objects) request.add_objects(object);
    stream->Write(request);
    stream->WritesDone();
    pb::PutManyResponse response;
    keys->clear();
    while (stream->Read(&response)) {
      for (const auto& object : response.objects()) keys->push_back(object.key());
    }
    return stream->Finish();
  }

  // A maintenance call read to its end: its status.
  template <typename Request, typename Response>
  grpc::Status Maintain(std::unique_ptr<grpc::ClientReader<Response>> (pb::ObjectStore::Stub::*call)(
                            grpc::ClientContext*, const Request&),
                        const Request& request = Request()) {
    grpc::ClientContext ctx;
    auto reader = (stub_.get()->*call)(&ctx, request);
    Response message;
    while (reader->Read(&message)) {
    }
    return reader->Finish();
  }
  grpc::Status Pack() { return Maintain(&pb::ObjectStore::Stub::Pack); }
  grpc::Status Repack() { return Maintain(&pb::ObjectStore::Stub::Repack); }
  grpc::Status Clean() { return Maintain(&pb::ObjectStore::Stub::Clean); }
  grpc::Status Delete(const std::vector<std::string>& keys) {
    pb::DeleteRequest request;
    for (const std::string& key : keys) request.add_keys(key);
    return Maintain(&pb::ObjectStore::Stub::Delete, request);
  }
  // Issues Validate reports (printed), or -1 if the call failed.
  int64_t ValidateIssues() {
    grpc::ClientContext ctx;
    auto reader = stub_->Validate(&ctx, pb::ValidateRequest());
    pb::ValidateResponse message;
    int64_t issues = 0;
    while (reader->Read(&message)) {
      if (message.has_issue()) {
        ADD_FAILURE() << message.issue().kind() << " " << message.issue().subject();
        ++issues;
      }
    }
    return reader->Finish().ok() ? issues : -1;
  }
  bool StatusAnswers() {
    grpc::ClientContext ctx;
    pb::StatusResponse response;
    return stub_->Status(&ctx, pb::StatusRequest(), &response).ok();
  }
  absl::StatusOr<std::string> Get(const std::string& key) {
    grpc::ClientContext ctx;
    pb::GetRequest request;
    request.set_key(key);
    request.set_verify(true);
    auto reader = stub_->Get(&ctx, request);
    std::string out;
    pb::GetResponse message;
    while (reader->Read(&message)) out += message.data();
    grpc::Status status = reader->Finish();
    if (!status.ok()) {
      return absl::Status(absl::StatusCode(status.error_code()), status.error_message());
    }
    return out;
  }
  bool Has(const std::string& key) {
    auto has = container_->Has(key);
    EXPECT_TRUE(has.ok());
    return has.ok() && *has;
  }

  void VerifyAcked() {
    for (const auto& [key, content] : acked_) {
      auto got = Get(key);
      ASSERT_TRUE(got.ok()) << key << ": " << got.status();
      ASSERT_TRUE(*got == content) << key;
    }
  }

  // A call under test. `prepare` sets up each attempt (unfaulted); `run`
  // makes the call, recording what it acknowledged when it succeeds.
  struct Call {
    std::string name;
    std::function<void()> prepare = [] {};
    std::function<grpc::Status()> run;
    // Acknowledged objects a failed call may have removed (a delete's).
    std::function<std::set<std::string>()> in_doubt = [] { return std::set<std::string>(); };
  };

  // Before each fault, a dry run counts the call's writes and syncs on the
  // container's files (the service's container lives on, so the count is
  // taken afresh); then the first, and the last, of them fails with each
  // errno in turn. (The store suite fails every call of each path; this one
  // checks what the client sees.)
  void FaultEach(Call& call) {
    SCOPED_TRACE(call.name);
    size_t cases = 0;
    int failed = 0;
    for (FaultOp op : {FaultOp::kWrite, FaultOp::kSync}) {
      for (bool last : {false, true}) {
        for (int error : kErrors) {
          // The count can drift from one call to the next (a new prefix
          // folder, a pack rollover, how many index pages a commit dirties,
          // how a stream's messages arrive): a fault not reached is armed
          // again, at the lowest count seen so far, a few times at most.
          grpc::Status status;
          uint64_t injected = 0;
          uint64_t fewest = UINT64_MAX;
          std::string where;
          bool skip = false;
          for (int attempt = 0; attempt < 6 && injected == 0; ++attempt) {
            call.prepare();
            FaultInjector::StartCounting(filter());
            grpc::Status dry = call.run();
            FaultInjector::Disarm();
            ASSERT_TRUE(dry.ok()) << dry.error_message();
            fewest = std::min(fewest, FaultInjector::Calls(op));
            ASSERT_GT(fewest, 0u) << FaultOpName(op);
            if (last && fewest == 1) {  // the first is the last
              skip = true;
              break;
            }
            const FaultSpec spec{.op = op, .nth = last ? fewest : 1, .error = error,
                                 .path_contains = filter()};
            where = StrCat(FaultOpName(op), " #", spec.nth, " of ", fewest, " ",
                           strerrorname_np(error));
            call.prepare();
            FaultInjector::Arm(spec);
            status = call.run();
            injected = FaultInjector::Injected();
            if (injected == 0) fewest = std::min(fewest, FaultInjector::Calls(op));
            where += " in " + FaultInjector::LastFaultPath();
            FaultInjector::Disarm();
          }
          if (skip) continue;
          ++cases;
          SCOPED_TRACE(StrCat(where, ": ", status.error_message()));
          EXPECT_GT(injected, 0u) << "the call no longer makes the call the dry run counted";
          if (status.ok()) {
            EXPECT_TRUE(injected == 0) << "the fault was injected and ignored";
            continue;
          }
          ++failed;
          EXPECT_EQ(status.error_code(), ExpectedCode(error));
          EXPECT_TRUE(NamesWhatFailed(status.error_message()));
          EXPECT_TRUE(StatusAnswers());
          // Reads during the fault's aftermath: every 16th acknowledged
          // object (all of them are read at the end of each call).
          std::set<std::string> doubt = call.in_doubt();
          size_t j = 0;
          for (const auto& [key, content] : acked_) {
            if (j++ % 16 != 0 || doubt.contains(key)) continue;
            auto got = Get(key);
            ASSERT_TRUE(got.ok() && *got == content) << key << ": " << got.status();
          }
          grpc::Status retry = call.run();
          ASSERT_TRUE(retry.ok()) << "retry: " << retry.error_message();
        }
      }
    }
    std::cout << call.name << ": " << cases << " faults, " << failed
              << " failed the call\n";
    VerifyAcked();
    EXPECT_EQ(ValidateIssues(), 0);
  }

  TempDir dir_{::access("/dev/shm", W_OK) == 0 ? "/dev/shm"
                                               : std::filesystem::temp_directory_path().string()};
  PeerRegistry peers_;
  std::unique_ptr<Container> container_;
  std::unique_ptr<ObjectStoreService> service_;
  std::unique_ptr<InProcessServer> server_;
  std::unique_ptr<pb::ObjectStore::Stub> stub_;
  std::map<std::string, std::string> acked_;
  int seed_ = 0;
};

TEST_F(ServiceFaultTest, WritesAndMaintenanceUnderEveryFault) {
  std::string data;
  Call put_loose;
  put_loose.name = "Put loose";
  put_loose.prepare = [&] { data = RandomBytes(++seed_, 5000); };
  put_loose.run = [&] {
    std::string key;
    grpc::Status status = Put(data, pb::PUT_MODE_LOOSE, &key);
    if (status.ok()) acked_[key] = data;
    return status;
  };
  FaultEach(put_loose);

  Call put_packed;
  put_packed.name = "Put packed";
  put_packed.prepare = put_loose.prepare;
  put_packed.run = [&] {
    std::string key;
    grpc::Status status = Put(data, pb::PUT_MODE_PACKED, &key);
    if (status.ok()) acked_[key] = data;
    if (!status.ok()) {
      EXPECT_FALSE(Has(Sha(data))) << "a failed packed put left its object";
    }
    return status;
  };
  FaultEach(put_packed);

  std::vector<std::string> many;
  Call put_many;
  put_many.name = "PutMany";
  put_many.prepare = [&] {
    many.clear();
    for (int j = 0; j < 40; ++j) many.push_back(RandomBytes(++seed_, 9000));
  };
  put_many.run = [&] {
    std::vector<std::string> keys;
    grpc::Status status = PutMany(many, &keys);
    if (status.ok()) {
      EXPECT_EQ(keys.size(), many.size());
      for (size_t j = 0; j < keys.size(); ++j) acked_[keys[j]] = many[j];
    }
    return status;
  };
  FaultEach(put_many);

  for (pb::PutMode mode : {pb::PUT_MODE_LOOSE, pb::PUT_MODE_PACKED}) {
    Call stream;
    stream.name = mode == pb::PUT_MODE_LOOSE ? "PutStream loose" : "PutStream packed";
    stream.prepare = [&] { data = TextBytes(++seed_, (1 << 20) + 100000); };
    stream.run = [&, mode] {
      std::string key;
      grpc::Status status = PutStream(data, mode, &key);
      if (status.ok()) acked_[key] = data;
      return status;
    };
    FaultEach(stream);
  }

  Call pack;
  pack.name = "Pack";
  pack.prepare = [&] {
    for (int j = 0; j < 6; ++j) {
      std::string content = RandomBytes(++seed_, 60000);
      std::string key;
      ASSERT_TRUE(Put(content, pb::PUT_MODE_LOOSE, &key).ok());
      acked_[key] = content;
    }
  };
  pack.run = [&] { return Pack(); };
  FaultEach(pack);

  std::vector<std::string> doomed;
  auto make_holes = [&] {
    std::vector<std::string> keys;
    many.clear();
    for (int j = 0; j < 8; ++j) many.push_back(RandomBytes(++seed_, 20000));
    ASSERT_TRUE(PutMany(many, &keys).ok());
    doomed.clear();
    for (size_t j = 0; j < keys.size(); ++j) {
      if (j % 2 == 0) {
        doomed.push_back(keys[j]);
      } else {
        acked_[keys[j]] = many[j];
      }
    }
  };
  Call repack;
  repack.name = "Repack";
  repack.prepare = [&] {
    make_holes();
    ASSERT_TRUE(Delete(doomed).ok());
  };
  repack.run = [&] { return Repack(); };
  FaultEach(repack);

  Call clean;
  clean.name = "Clean";
  clean.prepare = [&] {
    for (int j = 0; j < 4; ++j) {
      std::string content = RandomBytes(++seed_, 8000);
      std::string key;
      ASSERT_TRUE(Put(content, pb::PUT_MODE_LOOSE, &key).ok());
      acked_[key] = content;
    }
    PackOptions keep;  // packed, loose copies left for clean
    keep.delete_loose = false;
    ASSERT_TRUE(container_->PackAllLoose(keep).ok());
  };
  clean.run = [&] { return Clean(); };
  FaultEach(clean);

  Call del;
  del.name = "Delete";
  del.prepare = [&] {
    make_holes();
    for (int j = 0; j < 2; ++j) {
      std::string content = RandomBytes(++seed_, 3000);
      std::string key;
      ASSERT_TRUE(Put(content, pb::PUT_MODE_LOOSE, &key).ok());
      doomed.push_back(key);
    }
  };
  del.in_doubt = [&] { return std::set<std::string>(doomed.begin(), doomed.end()); };
  del.run = [&] {
    grpc::Status status = Delete(doomed);
    if (status.ok()) {
      for (const std::string& key : doomed) EXPECT_FALSE(Has(key));
    }
    return status;
  };
  FaultEach(del);
}

// Many callers in flight when the pack's fdatasync fails: every caller of
// the failed batch gets the error and none of their objects is there; the
// others are acknowledged and read back.
TEST_F(ServiceFaultTest, GroupCommitFailsTheWholeBatchAndNoOneElse) {
  constexpr int kThreads = 8, kPuts = 12;
  for (int error : kErrors) {
    SCOPED_TRACE(strerrorname_np(error));
    // The first sync of packs/ fails: a batch of whichever callers were
    // queued together.
    FaultInjector::Arm({.op = FaultOp::kSync, .nth = 1, .error = error,
                        .path_contains = filter() + "packs/"});
    std::vector<std::thread> threads;
    std::mutex mu;
    std::vector<std::pair<std::string, grpc::Status>> outcomes;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPuts; ++i) {
          std::string content = RandomBytes((error * 1000 + t) * 1000 + i, 2000);
          std::string key;
          grpc::Status status = Put(content, pb::PUT_MODE_PACKED, &key);
          std::lock_guard lock(mu);
          outcomes.emplace_back(content, status);
          if (status.ok()) {
            EXPECT_EQ(key, Sha(content));
          }
        }
      });
    }
    for (auto& thread : threads) thread.join();
    EXPECT_EQ(FaultInjector::Injected(), 1u);
    FaultInjector::Disarm();
    int failed = 0;
    for (const auto& [content, status] : outcomes) {
      if (status.ok()) {
        acked_[Sha(content)] = content;
        continue;
      }
      ++failed;
      EXPECT_EQ(status.error_code(), ExpectedCode(error));
      EXPECT_NE(status.error_message().find("sync packs/"), std::string::npos)
          << status.error_message();
      EXPECT_FALSE(Has(Sha(content))) << "a caller told of a failure finds its object stored";
    }
    EXPECT_GE(failed, 1);
    std::cout << strerrorname_np(error) << ": " << failed << " of " << outcomes.size()
              << " callers were in the failed batch\n";
    VerifyAcked();
  }
  EXPECT_EQ(ValidateIssues(), 0);
}

// A disk that stays full: writes fail, reads and Status answer, and the
// service takes writes again once there is room.
TEST_F(ServiceFaultTest, ReadsAndStatusAnswerWhileTheDiskIsFull) {
  std::string kept = RandomBytes(1, 30000), key;
  ASSERT_TRUE(Put(kept, pb::PUT_MODE_PACKED, &key).ok());
  acked_[key] = kept;
  FaultInjector::Arm({.op = FaultOp::kWrite, .nth = 1, .error = ENOSPC, .times = 0,
                      .path_contains = filter()});
  for (pb::PutMode mode : {pb::PUT_MODE_LOOSE, pb::PUT_MODE_PACKED}) {
    std::string ignored;
    grpc::Status status = Put(RandomBytes(2, 30000), mode, &ignored);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
    EXPECT_TRUE(StatusAnswers());
    EXPECT_EQ(Get(key).value(), kept);
  }
  FaultInjector::Disarm();
  ASSERT_TRUE(Put(RandomBytes(2, 30000), pb::PUT_MODE_PACKED, &key).ok());
  acked_[key] = RandomBytes(2, 30000);
  VerifyAcked();
  EXPECT_EQ(ValidateIssues(), 0);
}

}  // namespace
}  // namespace packstore::service
