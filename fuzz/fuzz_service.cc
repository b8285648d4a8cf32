// The gRPC service (server/service/service.h): every ObjectStore call, its
// request messages as bytes on the wire, delivered to the real
// ObjectStoreService through a real grpc::Server and channel over a
// socketpair (as packstored's listener hands connections to gRPC, so the
// peer and its credentials are known: an allowed admin).
//
// Input: one byte picking the method (kMethods, in the proto's order, and
// one the service does not have), then the request messages, each a
// varint length and that many bytes of serialized request. Every call is
// made as a bidirectional stream of raw messages (the wire does not tell
// the kinds apart), so a unary method may also get none or several, and
// any message may fail to parse.
//
// Checks: no crash or leak; every call ends with a status within
// kCallDeadline (DEADLINE_EXCEEDED is a hang); requests that do not parse
// end in an error; and for calls whose requests parse:
//   - Put, PutStream, PutMany: a stored object's key is the SHA-256 of the
//     bytes sent (for PutStream, those up to the first finish_write), its
//     size theirs, and a Get of it returns those bytes;
//   - Get: the range sent is the requested one clamped to the object, and
//     the bytes add up to it;
//   - List: `after` is accepted exactly when it is at most 64 lowercase hex
//     characters; keys come ascending, after `after`, well formed, in full
//     pages but the last;
//   - Has and Stat: one answer per key, and a malformed key fails the call.
#include <grpc/grpc.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/hash_key.h"
#include "common/hasher.h"
#include "common/str_cat.h"
#include "fuzz/fuzz_check.h"
#include "fuzz/fuzz_support.h"
#include "google/protobuf/stubs/logging.h"
#include "packstore/v1/packstore.grpc.pb.h"
#include "tests/service/in_process_server.h"

namespace packstore::fuzz {
namespace {

namespace pb = ::packstore::v1;

constexpr auto kCallDeadline = std::chrono::seconds(5);
// What one input may carry: enough for every shape of call, small enough
// to keep an input fast.
constexpr size_t kMaxMessages = 16;

enum class Rpc {
  kPut, kPutStream, kPutMany, kGet, kGetMany, kStat, kHas, kList, kStatus,
  kPack, kRepack, kClean, kDelete, kValidate, kUnknown,
};
constexpr const char* kMethods[] = {
    "Put", "PutStream", "PutMany", "Get", "GetMany", "Stat", "Has", "List", "Status",
    "Pack", "Repack", "Clean", "Delete", "Validate", "NoSuchMethod",
};
constexpr size_t kMethodCount = sizeof(kMethods) / sizeof(kMethods[0]);

// The server and a channel to it, remade with the store.
class Server {
 public:
  void Start(service::ObjectStoreService* service) {
    FuzzStore& store = FuzzStore::Get();
    server_ = std::make_unique<packstore::testing::InProcessServer>(service, store.peers());
    FUZZ_CHECK(server_->started(), "the gRPC server did not start");
    channel_ = server_->Connect(store.self());
    FUZZ_CHECK(channel_ != nullptr, "socketpair");
    stub_ = std::make_unique<grpc::GenericStub>(channel_);
  }
  void Stop() {
    stub_.reset();
    channel_.reset();
    server_.reset();
  }
  grpc::GenericStub* stub() { return stub_.get(); }

 private:
  std::unique_ptr<packstore::testing::InProcessServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> stub_;
};

Server& TheServer() {
  static Server* const server = new Server();
  return *server;
}

// One call as a bidirectional stream of raw messages: writes them all,
// half-closes, reads every response, and waits for the status.
class RawCall : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  RawCall(Rpc rpc, const std::vector<std::string>& requests) {
    for (const std::string& request : requests) {
      grpc::Slice slice(request);
      requests_.emplace_back(&slice, 1);
    }
    context_.set_deadline(std::chrono::system_clock::now() + kCallDeadline);
    TheServer().stub()->PrepareBidiStreamingCall(
        &context_, StrCat("/packstore.v1.ObjectStore/", kMethods[static_cast<size_t>(rpc)]),
        grpc::StubOptions(), this);
    StartRead(&response_);
    WriteNext();
    StartCall();
  }

  grpc::Status Await(std::vector<std::string>* responses) {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return done_; });
    *responses = std::move(responses_);
    return status_;
  }

  void OnWriteDone(bool ok) override {
    if (ok) WriteNext();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    std::vector<grpc::Slice> slices;
    FUZZ_CHECK(response_.Dump(&slices).ok(), "a response that cannot be read");
    std::string bytes;
    for (const grpc::Slice& slice : slices) {
      bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
    responses_.push_back(std::move(bytes));
    StartRead(&response_);
  }
  void OnDone(const grpc::Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = status;
    done_ = true;
    done_cv_.notify_all();
  }

 private:
  void WriteNext() {
    if (next_ == requests_.size()) return StartWritesDone();
    StartWrite(&requests_[next_++]);
  }

  grpc::ClientContext context_;
  std::vector<grpc::ByteBuffer> requests_;
  size_t next_ = 0;
  grpc::ByteBuffer response_;
  std::vector<std::string> responses_;  // only OnReadDone touches it before done_
  std::mutex mu_;
  std::condition_variable done_cv_;
  bool done_ = false;
  grpc::Status status_;
};

grpc::Status Call(Rpc rpc, const std::vector<std::string>& requests,
                  std::vector<std::string>* responses) {
  RawCall call(rpc, requests);
  grpc::Status status = call.Await(responses);
  FUZZ_CHECK(status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED,
             StrCat(kMethods[static_cast<size_t>(rpc)], " did not end within ",
                    kCallDeadline.count(), " s: ", status.error_message()));
  return status;
}

template <typename Message>
Message Parse(const std::string& bytes) {
  Message message;
  FUZZ_CHECK(message.ParseFromString(bytes), "the service sent a response that does not parse");
  return message;
}

template <typename Message>
std::optional<std::vector<Message>> ParseAll(const std::vector<std::string>& requests) {
  std::vector<Message> messages;
  for (const std::string& bytes : requests) {
    Message message;
    if (!message.ParseFromString(bytes)) return std::nullopt;
    messages.push_back(std::move(message));
  }
  return messages;
}

std::string Sha(std::string_view data) { return Hasher::Hash(HashType::kSha256, data); }

bool IsKey(std::string_view key) { return ValidateKey(key, HashType::kSha256).ok(); }

// A stored object reads back as `data`.
void CheckReadBack(std::string_view key, std::string_view data) {
  pb::GetRequest get;
  get.set_key(std::string(key));
  get.set_verify(true);
  std::vector<std::string> responses;
  const grpc::Status status = Call(Rpc::kGet, {get.SerializeAsString()}, &responses);
  FUZZ_CHECK(status.ok(), StrCat("Get of the object just stored: ", status.error_message()));
  std::string content;
  for (const std::string& bytes : responses) content += Parse<pb::GetResponse>(bytes).data();
  FUZZ_CHECK(content == data, StrCat("object ", key, " reads back as other bytes"));
}

void CheckStored(const pb::ObjectRef& object, std::string_view data) {
  FUZZ_CHECK(object.key() == Sha(data) && object.size() == data.size(),
             StrCat("stored ", object.key(), " (", object.size(), " bytes) for ", data.size(),
                    " bytes hashing to ", Sha(data)));
  CheckReadBack(object.key(), data);
}

// The calls whose results are checked further; the others only end.
void CheckCall(Rpc rpc, const std::vector<std::string>& requests, const grpc::Status& status,
               const std::vector<std::string>& responses) {
  switch (rpc) {
    case Rpc::kPut: {
      auto put = ParseAll<pb::PutRequest>(requests);
      if (!status.ok() || !put) return;
      // gRPC serves a unary call with its first message (and ignores more).
      FUZZ_CHECK(!put->empty() && responses.size() == 1, "a Put answered without a request");
      CheckStored(Parse<pb::PutResponse>(responses[0]).object(), (*put)[0].data());
      return;
    }
    case Rpc::kPutStream: {
      auto stream = ParseAll<pb::PutStreamRequest>(requests);
      if (!stream) return;
      std::string data;
      bool finished = false;
      for (const pb::PutStreamRequest& message : *stream) {
        data += message.data();
        if ((finished = message.finish_write())) break;
      }
      if (!finished) {
        FUZZ_CHECK(!status.ok(), "a PutStream without finish_write stored something");
        return;
      }
      if (!status.ok()) return;
      FUZZ_CHECK(responses.size() == 1, "a PutStream answered other than once");
      CheckStored(Parse<pb::PutStreamResponse>(responses[0]).object(), data);
      return;
    }
    case Rpc::kPutMany: {
      auto batches = ParseAll<pb::PutManyRequest>(requests);
      if (!batches) return;
      FUZZ_CHECK(responses.size() <= batches->size(), "more PutMany answers than batches");
      if (status.ok()) FUZZ_CHECK(responses.size() == batches->size(), "a batch not answered");
      size_t read_back = 0;
      for (size_t i = 0; i < responses.size(); ++i) {
        const pb::PutManyResponse answer = Parse<pb::PutManyResponse>(responses[i]);
        const pb::PutManyRequest& batch = (*batches)[i];
        FUZZ_CHECK(answer.objects_size() == batch.objects_size(),
                   StrCat("batch ", i, ": ", answer.objects_size(), " answers for ",
                          batch.objects_size(), " objects"));
        for (int j = 0; j < batch.objects_size(); ++j) {
          // Every key is checked; a few objects are read back, to keep an
          // input fast.
          if (read_back++ < 4) {
            CheckStored(answer.objects(j), batch.objects(j));
          } else {
            FUZZ_CHECK(answer.objects(j).key() == Sha(batch.objects(j)), "a PutMany key");
          }
        }
      }
      return;
    }
    case Rpc::kGet: {
      auto get = ParseAll<pb::GetRequest>(requests);
      if (!status.ok() || !get || get->empty()) return;
      const pb::GetRequest& request = (*get)[0];
      FUZZ_CHECK(!responses.empty(), "a Get without a first message");
      const pb::GetResponse first = Parse<pb::GetResponse>(responses[0]);
      const uint64_t size = first.info().size();
      const uint64_t offset = std::min<uint64_t>(request.offset(), size);
      const uint64_t length =
          request.has_length() ? std::min<uint64_t>(request.length(), size - offset) : size - offset;
      FUZZ_CHECK(first.info().key() == request.key() && first.offset() == offset &&
                     first.length() == length,
                 StrCat("range ", first.offset(), "+", first.length(), " for ", request.offset(),
                        "+", request.has_length() ? StrCat(request.length()) : "unset", " of ",
                        size));
      uint64_t received = 0;
      for (const std::string& bytes : responses) {
        received += Parse<pb::GetResponse>(bytes).data().size();
      }
      FUZZ_CHECK(received == length, StrCat(received, " bytes for a range of ", length));
      return;
    }
    case Rpc::kHas:
    case Rpc::kStat: {
      // Both carry keys as field 1, so either parses as the other.
      auto has = ParseAll<pb::HasRequest>(requests);
      if (!has || has->empty()) return;
      const bool all_keys = std::all_of((*has)[0].keys().begin(), (*has)[0].keys().end(),
                                        [](const std::string& key) { return IsKey(key); });
      FUZZ_CHECK(status.ok() == all_keys ||
                     status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED,
                 StrCat("keys all well formed: ", all_keys, "; ", status.error_message()));
      if (!status.ok()) return;
      const int answers = rpc == Rpc::kHas
                              ? Parse<pb::HasResponse>(responses.at(0)).present_size()
                              : Parse<pb::StatResponse>(responses.at(0)).stats_size();
      FUZZ_CHECK(answers == (*has)[0].keys_size(), "not one answer per key");
      return;
    }
    case Rpc::kList: {
      auto list = ParseAll<pb::ListRequest>(requests);
      if (!list || list->empty()) return;
      const std::string& after = (*list)[0].after();
      const bool valid_after =
          after.size() <= 64 && std::all_of(after.begin(), after.end(), [](char c) {
            return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
          });
      FUZZ_CHECK(status.ok() == valid_after,
                 StrCat("List after \"", after.substr(0, 80), "\": ", status.error_message()));
      if (!status.ok()) return;
      const uint32_t requested = (*list)[0].page_size();
      const int page_size = requested == 0 ? 1000 : static_cast<int>(std::min(requested, 10000u));
      std::string previous = after;
      for (size_t i = 0; i < responses.size(); ++i) {
        const pb::ListResponse page = Parse<pb::ListResponse>(responses[i]);
        FUZZ_CHECK(i + 1 == responses.size() ? page.keys_size() < page_size
                                             : page.keys_size() == page_size,
                   StrCat("page ", i, " of ", page.keys_size(), " keys (page size ", page_size, ")"));
        for (const std::string& key : page.keys()) {
          FUZZ_CHECK(IsKey(key) && key > previous,
                     StrCat("List gave ", key, " after ", previous));
          previous = key;
        }
      }
      FUZZ_CHECK(!responses.empty(), "a List that ended without its last page");
      return;
    }
    default:
      return;
  }
}

}  // namespace
}  // namespace packstore::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using namespace packstore::fuzz;
  grpc_init();  // one library reference for the whole run
  // Requests that do not parse are expected; protobuf would log each one.
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel, const char*, int,
                                     const std::string&) {});
  FuzzStore& store = FuzzStore::Get();
  store.set_on_replace([](packstore::service::ObjectStoreService* service) {
    if (service == nullptr) {
      TheServer().Stop();
    } else {
      TheServer().Start(service);
    }
  });
  TheServer().Start(store.service());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace packstore::fuzz;
  if (size == 0) return -1;
  const Rpc rpc = static_cast<Rpc>(data[0] % kMethodCount);
  std::vector<std::string> requests;
  size_t pos = 1;
  while (pos < size) {
    if (requests.size() == kMaxMessages) return -1;
    uint64_t length = 0;
    for (int shift = 0; pos < size && shift < 28; shift += 7) {
      const uint8_t byte = data[pos++];
      length |= uint64_t{byte & 0x7fu} << shift;
      if ((byte & 0x80) == 0) break;
    }
    length = std::min<uint64_t>(length, size - pos);
    requests.emplace_back(reinterpret_cast<const char*>(data) + pos, length);
    pos += length;
  }
  FuzzStore::Get().StartInput();
  std::vector<std::string> responses;
  const grpc::Status status = Call(rpc, requests, &responses);
  if (rpc == Rpc::kUnknown) {
    FUZZ_CHECK(status.error_code() == grpc::StatusCode::UNIMPLEMENTED, status.error_message());
    return 0;
  }
  CheckCall(rpc, requests, status, responses);
  return 0;
}
