// The gRPC service over a real connection: a socketpair handed to a real
// grpc::Server the way packstored's listener hands it accepted
// connections (so the peer is "fd:N" and its credentials are known), and a
// real channel on the other end. Runs under AddressSanitizer too; the
// daemon's own behaviour (listener, signals, systemd) is tested with the
// real packstored in tests/daemon.
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include "gtest/gtest.h"
#include "packstore/v1/packstore.grpc.pb.h"
#include "server/service/service.h"
#include "server/store/container.h"
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

class ServiceTest : public ::testing::Test {
 protected:
  // One gRPC library reference for the whole run, so that destroying a
  // test's server does not shut the library down (which can wait seconds
  // for gRPC's executor threads) only for the next test to start it again.
  static void SetUpTestSuite() { grpc_init(); }

  void SetUp() override { Start(ServiceOptions{}); }
  void TearDown() override { Stop(); }

  void Start(ServiceOptions options, PeerCredentials self = {getuid(), getgid(), getpid()}) {
    if (!std::filesystem::exists(dir_.Sub("store"))) {
      InitOptions init;
      init.pack_size_target = 4 << 20;  // several packs in the larger tests
      ASSERT_TRUE(Container::Init(dir_.Sub("store"), init).ok());
    }
    auto container = Container::Open(dir_.Sub("store"));
    ASSERT_TRUE(container.ok()) << container.status();
    container_ = std::move(*container);
    if (options.access.admin_uids.empty()) options.access.admin_uids = {getuid()};
    service_ = ObjectStoreService::Create(container_.get(), &peers_, options);
    server_ = std::make_unique<InProcessServer>(service_.get(), &peers_, 64 << 20);
    ASSERT_TRUE(server_->started());
    stub_ = Connect(self);
  }

  std::unique_ptr<pb::ObjectStore::Stub> Connect(PeerCredentials self) {
    std::shared_ptr<grpc::Channel> channel = server_->Connect(self);
    EXPECT_NE(channel, nullptr) << "socketpair: " << std::strerror(errno);
    return pb::ObjectStore::NewStub(channel);
  }

  void Stop() {
    stub_.reset();
    if (server_) server_->Shutdown();
    if (service_) {
      EXPECT_TRUE(service_->Shutdown(absl::Now() + absl::Seconds(5)));
    }
    server_.reset();
    service_.reset();
    container_.reset();
  }

  // A PutStream that sent one message and stays open until Finish or
  // Cancel (or the end of the scope).
  class HeldStream {
   public:
    explicit HeldStream(pb::ObjectStore::Stub& stub) : writer_(stub.PutStream(&ctx_, &response_)) {
      pb::PutStreamRequest hello;
      hello.set_data("a");
      writer_->Write(hello);  // false if the daemon refused the call at once
    }
    ~HeldStream() { Cancel(); }
    // The call's status, once the client has said it has nothing more.
    grpc::Status Finish() {
      if (finished_) return status_;
      finished_ = true;
      writer_->WritesDone();
      status_ = writer_->Finish();
      return status_;
    }
    void Cancel() {
      if (finished_) return;
      ctx_.TryCancel();
      Finish();
    }

   private:
    grpc::ClientContext ctx_;
    pb::PutStreamResponse response_;
    std::unique_ptr<grpc::ClientWriter<pb::PutStreamRequest>> writer_;
    grpc::Status status_;
    bool finished_ = false;
  };

  // Waits until the daemon runs `count` calls of `method` (a client's
  // Write returns once the message is queued, before the daemon runs the
  // call, so a later call could overtake it).
  void WaitUntilActive(std::string_view method, uint64_t count) {
    uint64_t active = 0;
    for (int i = 0; i < 1000 && active != count; ++i) {
      grpc::ClientContext ctx;
      pb::StatusResponse response;
      ASSERT_TRUE(stub_->Status(&ctx, pb::StatusRequest(), &response).ok());
      active = 0;
      for (const pb::MethodStats& m : response.rpcs()) {
        if (m.method() == method) active = m.active();
      }
      if (active != count) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(active, count) << method;
  }

  absl::StatusOr<std::string> Put(std::string data, pb::PutMode mode = pb::PUT_MODE_AUTO,
                                  pb::Compression compression = pb::COMPRESSION_NO) {
    grpc::ClientContext ctx;
    pb::PutRequest request;
    request.mutable_options()->set_mode(mode);
    request.mutable_options()->set_compression(compression);
    request.set_data(std::move(data));
    pb::PutResponse response;
    grpc::Status status = stub_->Put(&ctx, request, &response);
    if (!status.ok()) return absl::Status(absl::StatusCode(status.error_code()), status.error_message());
    return response.object().key();
  }

  // Streams `data` in `chunk`-byte messages; finish_write on the last
  // unless `abandon`.
  grpc::Status PutStream(std::string_view data, pb::PutMode mode, size_t chunk,
                         std::string* key, bool abandon = false) {
    return PutStream(*stub_, data, mode, chunk, key, abandon);
  }
  grpc::Status PutStream(pb::ObjectStore::Stub& stub, std::string_view data, pb::PutMode mode,
                         size_t chunk, std::string* key, bool abandon = false) {
    grpc::ClientContext ctx;
    pb::PutStreamResponse response;
    auto writer = stub.PutStream(&ctx, &response);
    size_t offset = 0;
    do {
      pb::PutStreamRequest message;
      if (offset == 0) message.mutable_options()->set_mode(mode);
      const size_t n = std::min(chunk, data.size() - offset);
      message.set_data(std::string(data.substr(offset, n)));
      offset += n;
      message.set_finish_write(offset == data.size() && !abandon);
      if (!writer->Write(message)) break;
    } while (offset < data.size());
    writer->WritesDone();
    grpc::Status status = writer->Finish();
    if (status.ok()) *key = response.object().key();
    return status;
  }

  absl::StatusOr<std::string> Get(const std::string& key, uint64_t offset = 0,
                                  std::optional<uint64_t> length = std::nullopt,
                                  pb::GetResponse* first = nullptr) {
    grpc::ClientContext ctx;
    pb::GetRequest request;
    request.set_key(key);
    request.set_offset(offset);
    if (length) request.set_length(*length);
    request.set_verify(offset == 0 && !length);
    auto reader = stub_->Get(&ctx, request);
    std::string out;
    pb::GetResponse message;
    bool is_first = true;
    while (reader->Read(&message)) {
      if (is_first && first) *first = message;
      is_first = false;
      EXPECT_LE(message.data().size(), size_t{1} << 20);
      out += message.data();
    }
    grpc::Status status = reader->Finish();
    if (!status.ok()) return absl::Status(absl::StatusCode(status.error_code()), status.error_message());
    return out;
  }

  TempDir dir_;
  PeerRegistry peers_;
  std::unique_ptr<Container> container_;
  std::unique_ptr<ObjectStoreService> service_;
  std::unique_ptr<InProcessServer> server_;
  std::unique_ptr<pb::ObjectStore::Stub> stub_;
};

TEST_F(ServiceTest, PutThenGetInEveryMode) {
  for (pb::PutMode mode : {pb::PUT_MODE_AUTO, pb::PUT_MODE_LOOSE, pb::PUT_MODE_PACKED,
                           pb::PUT_MODE_UNSPECIFIED}) {
    for (pb::Compression compression : {pb::COMPRESSION_NO, pb::COMPRESSION_YES,
                                        pb::COMPRESSION_AUTO}) {
      const std::string data = TextBytes(mode * 10 + compression, 5000);
      auto key = Put(data, mode, compression);
      ASSERT_TRUE(key.ok()) << key.status();
      EXPECT_EQ(*key, Sha(data));
      pb::GetResponse first;
      auto got = Get(*key, 0, std::nullopt, &first);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, data);
      EXPECT_EQ(first.info().size(), data.size());
      EXPECT_EQ(first.info().packed(), mode != pb::PUT_MODE_LOOSE);
    }
  }
}

TEST_F(ServiceTest, GetRangesAndErrors) {
  const std::string data = RandomBytes(1, 3 << 20);
  auto key = Put(data, pb::PUT_MODE_PACKED, pb::COMPRESSION_YES);
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(*Get(*key, 1000, 5000), data.substr(1000, 5000));
  EXPECT_EQ(*Get(*key, (3 << 20) - 10), data.substr((3 << 20) - 10));
  EXPECT_EQ(*Get(*key, 3 << 20), "");
  pb::GetResponse first;
  EXPECT_EQ(*Get(*key, (3 << 20) + 1, std::nullopt, &first), "");
  EXPECT_EQ(first.offset(), uint64_t{3} << 20);
  EXPECT_EQ(first.length(), 0u);
  EXPECT_EQ(Get(std::string(64, '0')).status().code(), absl::StatusCode::kNotFound);
  auto bad = Get("../../etc/passwd");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("lowercase hex"), std::string_view::npos);
  EXPECT_EQ(Get(std::string(64, 'A')).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ServiceTest, PutStreamSizesAndModes) {
  // Auto mode: small gathered into a pack, large streamed to a loose file;
  // packed mode: large copied into a pack.
  struct Case {
    size_t size;
    pb::PutMode mode;
    bool packed;
  };
  for (const Case& c : {Case{0, pb::PUT_MODE_AUTO, true}, Case{1, pb::PUT_MODE_AUTO, true},
                        Case{900 << 10, pb::PUT_MODE_AUTO, true},
                        Case{5 << 20, pb::PUT_MODE_AUTO, false},
                        Case{5 << 20, pb::PUT_MODE_PACKED, true},
                        Case{100 << 10, pb::PUT_MODE_LOOSE, false}}) {
    const std::string data = RandomBytes(c.size + c.mode, c.size);
    std::string key;
    grpc::Status status = PutStream(data, c.mode, 256 << 10, &key);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(key, Sha(data));
    auto info = container_->Stat(key);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->packed.has_value(), c.packed) << c.size << " mode " << c.mode;
    EXPECT_EQ(*Get(key), data);
  }
}

TEST_F(ServiceTest, AbandonedPutStreamStoresNothing) {
  for (size_t size : {size_t{1000}, size_t{6} << 20}) {
    const std::string data = RandomBytes(7, size);
    std::string key;
    grpc::Status status = PutStream(data, pb::PUT_MODE_AUTO, 512 << 10, &key, /*abandon=*/true);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
    EXPECT_FALSE(*container_->Has(Sha(data)));
  }
  // No sandbox file is left behind.
  EXPECT_TRUE(std::filesystem::is_empty(dir_.Sub("store/sandbox")));
}

TEST_F(ServiceTest, PutManyAnswersEveryMessageInOrder) {
  grpc::ClientContext ctx;
  auto stream = stub_->PutMany(&ctx);
  std::vector<std::vector<std::string>> sent;
  for (int m = 0; m < 12; ++m) {
    pb::PutManyRequest request;
    if (m == 0) request.mutable_options()->set_mode(pb::PUT_MODE_AUTO);
    std::vector<std::string> objects;
    for (int i = 0; i < 50; ++i) {
      // Mostly small; a few larger than the auto threshold go loose.
      const size_t size = (i == 7) ? (2 << 20) : (i * 37) % 3000;
      objects.push_back(RandomBytes(m * 1000 + i % 45, size));  // repeats included
      request.add_objects(objects.back());
    }
    sent.push_back(objects);
    ASSERT_TRUE(stream->Write(request));
  }
  stream->WritesDone();
  pb::PutManyResponse response;
  size_t m = 0;
  while (stream->Read(&response)) {
    ASSERT_LT(m, sent.size());
    ASSERT_EQ(response.objects_size(), static_cast<int>(sent[m].size()));
    for (int i = 0; i < response.objects_size(); ++i) {
      EXPECT_EQ(response.objects(i).key(), Sha(sent[m][i]));
      EXPECT_EQ(response.objects(i).size(), sent[m][i].size());
    }
    ++m;
  }
  grpc::Status status = stream->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(m, sent.size());
  EXPECT_EQ(*Get(Sha(sent[3][7])), sent[3][7]);
}

TEST_F(ServiceTest, GetManyStreamsEveryKeyOnceInStorageOrder) {
  std::map<std::string, std::string> objects;
  for (int i = 0; i < 300; ++i) {
    const size_t size = i == 5 ? (3 << 20) + 17 : (i * 101) % 5000;
    std::string data = RandomBytes(100 + i, size);
    auto key = Put(data, i % 3 == 0 ? pb::PUT_MODE_LOOSE : pb::PUT_MODE_PACKED);
    ASSERT_TRUE(key.ok());
    objects[*key] = data;
  }
  grpc::ClientContext ctx;
  pb::GetManyRequest request;
  for (const auto& [key, data] : objects) request.add_keys(key);
  request.add_keys(objects.begin()->first);  // a repeat
  const std::string missing(64, 'e');
  request.add_keys(missing);
  auto reader = stub_->GetMany(&ctx, request);
  std::map<std::string, std::string> got;
  std::set<std::string> missing_seen;
  std::vector<std::string> order;
  pb::GetManyResponse message;
  while (reader->Read(&message)) {
    EXPECT_LE(message.ByteSizeLong(), size_t{2} << 20);
    for (const pb::ObjectPiece& piece : message.pieces()) {
      if (piece.missing()) {
        missing_seen.insert(piece.key());
        continue;
      }
      std::string& data = got[piece.key()];
      EXPECT_EQ(piece.offset(), data.size()) << "pieces must be contiguous";
      if (data.empty()) order.push_back(piece.key());
      data += piece.data();
    }
  }
  grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(got, objects);
  EXPECT_EQ(missing_seen, std::set<std::string>{missing});
  // Storage order: packed ones by (pack, offset), then loose ones; the one
  // object over 1 MiB comes last, in pieces.
  std::vector<std::tuple<int, int64_t, uint64_t>> ranks;
  for (const std::string& key : order) {
    auto info = container_->Stat(key);
    if (info->size > (1 << 20)) {
      EXPECT_EQ(key, order.back());
      continue;
    }
    ranks.push_back(info->packed ? std::make_tuple(0, info->packed->pack_id, info->packed->offset)
                                 : std::make_tuple(1, int64_t{0}, uint64_t{0}));
  }
  EXPECT_EQ(ranks.size(), order.size() - 1);
  EXPECT_TRUE(std::is_sorted(ranks.begin(), ranks.end()));
}

TEST_F(ServiceTest, StatHasAndListPages) {
  std::set<std::string> keys;
  std::vector<std::string> bulk;
  for (int i = 0; i < 2500; ++i) bulk.push_back(RandomBytes(i, 64));
  auto written = container_->PutPacked(std::vector<std::string_view>(bulk.begin(), bulk.end()));
  ASSERT_TRUE(written.ok());
  for (const WrittenObject& w : *written) keys.insert(w.key);
  for (int i = 0; i < 30; ++i) keys.insert(*Put(RandomBytes(9000 + i, 64), pb::PUT_MODE_LOOSE));
  {
    grpc::ClientContext ctx;
    pb::HasRequest request;
    request.add_keys(*keys.begin());
    request.add_keys(std::string(64, 'f'));
    pb::HasResponse response;
    ASSERT_TRUE(stub_->Has(&ctx, request, &response).ok());
    EXPECT_TRUE(response.present(0));
    EXPECT_FALSE(response.present(1));
  }
  {
    grpc::ClientContext ctx;
    pb::StatRequest request;
    request.add_keys("nothex");
    pb::StatResponse response;
    grpc::Status status = stub_->Stat(&ctx, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(status.error_message().find("keys[0]"), std::string::npos);
  }
  std::vector<std::string> listed;
  std::string after;
  for (int call = 0; call < 2; ++call) {
    grpc::ClientContext ctx;
    pb::ListRequest request;
    request.set_page_size(700);
    request.set_after(after);
    auto reader = stub_->List(&ctx, request);
    pb::ListResponse page;
    int pages = 0;
    while (reader->Read(&page)) {
      EXPECT_LE(page.keys_size(), 700);
      for (const std::string& key : page.keys()) listed.push_back(key);
      // Resume from a second call after the first two pages.
      if (call == 0 && ++pages == 2) {
        ctx.TryCancel();
        break;
      }
    }
    reader->Finish();
    after = listed.back();
  }
  EXPECT_EQ(listed, std::vector<std::string>(keys.begin(), keys.end()));
}

TEST_F(ServiceTest, MaintenanceStreamsProgressAndResultAndRunsOneAtATime) {
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(Put(RandomBytes(i, 10000), pb::PUT_MODE_LOOSE).ok());
  ASSERT_TRUE(service_->RunMaintenance("test", [&]() -> absl::Status {
    grpc::ClientContext ctx;
    auto reader = stub_->Pack(&ctx, pb::PackRequest());
    pb::PackResponse message;
    while (reader->Read(&message)) {
    }
    grpc::Status status = reader->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(status.error_message().find("test"), std::string::npos);
    return absl::OkStatus();
  }).ok());

  grpc::ClientContext ctx;
  auto reader = stub_->Pack(&ctx, pb::PackRequest());
  pb::PackResponse message;
  int progress = 0, results = 0;
  while (reader->Read(&message)) {
    if (message.has_progress()) ++progress;
    if (message.has_result()) {
      ++results;
      EXPECT_EQ(message.result().packed(), 200u);
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_GE(progress, 1);
  EXPECT_EQ(results, 1);

  grpc::ClientContext vctx;
  auto validate = stub_->Validate(&vctx, pb::ValidateRequest());
  pb::ValidateResponse v;
  uint64_t checked = 0, issues = 1;
  while (validate->Read(&v)) {
    EXPECT_FALSE(v.has_issue()) << v.issue().kind() << " " << v.issue().subject();
    if (v.has_result()) {
      checked = v.result().packed_checked();
      issues = v.result().issues();
    }
  }
  ASSERT_TRUE(validate->Finish().ok());
  EXPECT_EQ(checked, 200u);
  EXPECT_EQ(issues, 0u);
}

TEST_F(ServiceTest, AdminCallsNeedAnAdminAndLimitsHold) {
  Stop();
  ServiceOptions options;
  options.access.admin_uids = {getuid() + 1};
  options.limits.max_object_size = 10000;
  options.limits.max_concurrent_streams = 2;
  options.limits.max_streams_per_client = 2;
  Start(options);
  grpc::ClientContext ctx;
  auto reader = stub_->Delete(&ctx, pb::DeleteRequest());
  pb::DeleteResponse message;
  while (reader->Read(&message)) {
  }
  grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(status.error_message().find("admin"), std::string::npos);

  auto big = Put(std::string(10001, 'x'));
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(big.status().message().find("--max-object-size"), std::string_view::npos);
  std::string key;
  EXPECT_EQ(PutStream(std::string(30000, 'y'), pb::PUT_MODE_AUTO, 4096, &key).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);

  // Two streams held open; a third is refused. (The refused PutStream above
  // counts as active until its OnDone.)
  WaitUntilActive("PutStream", 0);
  HeldStream s1(*stub_), s2(*stub_);
  WaitUntilActive("PutStream", 2);
  HeldStream s3(*stub_);
  EXPECT_EQ(s3.Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(ServiceTest, OneClientProcessGetsOnlyItsShareOfStreams) {
  Stop();
  ServiceOptions options;
  options.limits.max_concurrent_streams = 6;
  options.limits.max_streams_per_client = 2;
  Start(options);
  auto other = Connect({getuid(), getgid(), 1});         // another process
  auto same = Connect({getuid(), getgid(), getpid()});  // a second channel of this one

  // This process holds its two; a third from it is refused on either of its
  // channels, naming the limit; another process is served.
  HeldStream a1(*stub_), a2(*stub_);
  WaitUntilActive("PutStream", 2);
  for (pb::ObjectStore::Stub* stub : {stub_.get(), same.get()}) {
    HeldStream refused(*stub);
    grpc::Status status = refused.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    EXPECT_NE(status.error_message().find("--max-streams-per-client"), std::string::npos)
        << status.error_message();
    EXPECT_NE(status.error_message().find("pid " + std::to_string(getpid())), std::string::npos);
  }
  HeldStream b1(*other);
  std::string key;
  EXPECT_TRUE(PutStream(*other, "from another process", pb::PUT_MODE_AUTO, 4096, &key).ok());
  EXPECT_EQ(key, Sha("from another process"));

  // The total still holds: more processes fill it, the next is refused
  // with the --max-streams message. (Refused and finished calls count as
  // active until their OnDone: wait for them to go first, so that the
  // count below is that of the calls holding slots.)
  WaitUntilActive("PutStream", 3);
  HeldStream b2(*other);
  auto third = Connect({getuid(), getgid(), 2});
  auto fourth = Connect({getuid(), getgid(), 3});
  HeldStream c1(*third), d1(*fourth);
  WaitUntilActive("PutStream", 6);
  auto fifth = Connect({getuid(), getgid(), 4});
  HeldStream e1(*fifth);
  grpc::Status full = e1.Finish();
  EXPECT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(full.error_message().find("--max-streams)"), std::string::npos)
      << full.error_message();

  // A stream this process ends gives its slot back to it.
  a1.Cancel();
  WaitUntilActive("PutStream", 5);
  EXPECT_TRUE(PutStream(*same, "after a cancel", pb::PUT_MODE_AUTO, 4096, &key).ok());
}

// --stream-idle-timeout: a call whose client neither takes nor sends is
// cancelled after it (its slot comes back, nothing is stored); a client
// slower than the timeout in total but never idle that long is served.
TEST_F(ServiceTest, StreamsIdleForTheTimeoutAreCancelled) {
  Stop();
  ServiceOptions options;
  options.limits.stream_idle_timeout_seconds = 1;
  Start(options);
  const std::string big = RandomBytes(7, 16 << 20);  // far past the flow-control windows
  std::string key;
  ASSERT_TRUE(PutStream(big, pb::PUT_MODE_LOOSE, 1 << 20, &key).ok());

  const auto started = std::chrono::steady_clock::now();
  HeldStream silent_upload(*stub_);  // sent one message, then nothing
  grpc::ClientContext get_ctx;
  pb::GetRequest get;
  get.set_key(key);
  auto unread = stub_->Get(&get_ctx, get);  // never read while the daemon writes
  grpc::ClientContext many_ctx;
  auto silent_many = stub_->PutMany(&many_ctx);  // one batch answered, then nothing
  pb::PutManyRequest batch;
  batch.add_objects("a batch, then silence");
  ASSERT_TRUE(silent_many->Write(batch));
  pb::PutManyResponse answer;
  ASSERT_TRUE(silent_many->Read(&answer));
  EXPECT_EQ(answer.objects(0).key(), Sha("a batch, then silence"));

  // Meanwhile a client that sends a piece every 200 ms for 1.6 s, longer
  // than the timeout but never idle for it, is served.
  grpc::ClientContext slow_ctx;
  pb::PutStreamResponse slow_response;
  auto slow = stub_->PutStream(&slow_ctx, &slow_response);
  std::string sent;
  for (int i = 0; i < 8; ++i) {
    pb::PutStreamRequest piece;
    piece.set_data("piece " + std::to_string(i) + ";");
    sent += piece.data();
    piece.set_finish_write(i == 7);
    ASSERT_TRUE(slow->Write(piece)) << i;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  slow->WritesDone();
  ASSERT_TRUE(slow->Finish().ok());
  EXPECT_EQ(slow_response.object().key(), Sha(sent));

  WaitUntilActive("PutStream", 0);
  WaitUntilActive("Get", 0);
  WaitUntilActive("PutMany", 0);
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::seconds(1));
  EXPECT_EQ(silent_upload.Finish().error_code(), grpc::StatusCode::CANCELLED);
  pb::GetResponse message;
  size_t received = 0;
  while (unread->Read(&message)) received += message.data().size();
  EXPECT_EQ(unread->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(received, big.size());
  silent_many->WritesDone();
  EXPECT_EQ(silent_many->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_FALSE(*container_->Has(Sha("a")));  // the silent upload's byte
  EXPECT_TRUE(*container_->Has(Sha("a batch, then silence")));  // acknowledged before
}

TEST_F(ServiceTest, UnknownPeersAndPeersNotAllowedAreRefused) {
  Stop();
  ServiceOptions options;
  options.access.allow_uids = {getuid() + 5};
  options.access.admin_uids = {getuid() + 6};
  Start(options);
  auto refused = Put("hello");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied);
  auto allowed = Connect({getuid() + 5, getgid(), 1});
  grpc::ClientContext ctx;
  pb::PutRequest request;
  request.set_data("hello");
  pb::PutResponse response;
  EXPECT_TRUE(allowed->Put(&ctx, request, &response).ok());
}

TEST_F(ServiceTest, FreeDiskReserveRefusesWritesButNotReads) {
  auto key = Put("kept");
  ASSERT_TRUE(key.ok());
  Stop();
  ServiceOptions options;
  options.limits.free_disk_reserve = uint64_t{1} << 60;
  Start(options);
  for (pb::PutMode mode : {pb::PUT_MODE_PACKED, pb::PUT_MODE_LOOSE}) {
    auto refused = Put("more", mode);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(refused.status().message().find("--free-disk-reserve"), std::string_view::npos);
  }
  EXPECT_EQ(*Get(*key), "kept");
}

TEST_F(ServiceTest, ManyThreadsPutAndGetThroughGroupCommit) {
  constexpr int kThreads = 8, kPuts = 150;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPuts; ++i) {
        const std::string data = RandomBytes(t * 100000 + i, 1024);
        auto key = Put(data, pb::PUT_MODE_PACKED);
        if (!key.ok() || *key != Sha(data) || *Get(*key) != data) ++failures;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  auto counts = container_->Counts();
  EXPECT_EQ(counts->packed_objects, uint64_t{kThreads * kPuts});
}

}  // namespace
}  // namespace packstore::service
