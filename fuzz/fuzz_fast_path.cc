// The local fast path (docs/protocol.md, "The local fast path (PSFD1)"):
// bytes a client sends, through a real socketpair, into
// FastPathServer::Serve and the real service behind it.
//
// Input: one byte of flags, then the bytes of the stream.
//   bit 0  send the whole stream in one sendmsg (else one per line, as a
//          client does), the descriptors attached to it
//   bit 1  the fast path is turned off
//   bit 2  pad the first line: the next 3 bytes (little-endian) are how
//          many 'a's (up to 2 MiB) to insert before its newline, to reach
//          the line limit and the buffer's growth
// A PUT line goes with one descriptor (a memfd holding the line itself,
// so that its content varies with the input), plus one for each '@' in the
// line, as do other lines (at most 12): enough to pass the limit of 8.
//
// Checks: no crash, leak or hang (every read and write of the client side
// gives up after 5 s, and the server must stop within 5 s once the client
// has closed); every complete request line gets exactly one answer, in
// order (`OK ...` or `ERR <CODE> ...`), and nothing else is sent; after an
// ERR that closes the connection (a line too long, too many descriptors,
// the fast path off) the stream ends; a LOCATE answer has one line per
// key, naming the key, with descriptor numbers below the count sent, and
// the stored bytes it points at are the object (they hash to the key);
// a PUT answer names the hash and size of the file sent.
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "common/codec.h"
#include "common/hash_key.h"
#include "common/hasher.h"
#include "common/str_cat.h"
#include "fuzz/fuzz_check.h"
#include "fuzz/fuzz_support.h"
#include "server/daemon/fast_path_server.h"
#include "server/store/file_io.h"

namespace packstore::fuzz {
namespace {

using daemon::FastPathServer;

constexpr size_t kMaxPadding = size_t{2} << 20;
constexpr size_t kMaxDescriptorsSent = 12;
constexpr int kIoTimeoutSeconds = 5;

void SetTimeouts(int fd) {
  timeval timeout{kIoTimeoutSeconds, 0};
  FUZZ_CHECK(::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout)) == 0,
             "SO_RCVTIMEO");
  FUZZ_CHECK(::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout)) == 0,
             "SO_SNDTIMEO");
}

UniqueFd FileHolding(std::string_view content) {
  UniqueFd fd(::memfd_create("fuzz-put", MFD_CLOEXEC));
  FUZZ_CHECK(fd.get() >= 0, "memfd_create");
  FUZZ_CHECK(::write(fd.get(), content.data(), content.size()) ==
                 static_cast<ssize_t>(content.size()),
             "writing a memfd");
  return fd;
}

// One sendmsg of the client: bytes and the descriptors that go with them.
struct Message {
  std::string bytes;
  std::vector<UniqueFd> descriptors;
};

// Sends every message; false when the server closed the stream first.
bool SendAll(int socket, const std::vector<Message>& messages) {
  for (const Message& message : messages) {
    std::string_view text = message.bytes;
    std::vector<char> control;
    if (!message.descriptors.empty()) {
      control.resize(CMSG_SPACE(sizeof(int) * message.descriptors.size()));
    }
    while (!text.empty()) {
      iovec data{const_cast<char*>(text.data()), text.size()};
      msghdr header{};
      header.msg_iov = &data;
      header.msg_iovlen = 1;
      if (!control.empty()) {
        header.msg_control = control.data();
        header.msg_controllen = control.size();
        cmsghdr* c = CMSG_FIRSTHDR(&header);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * message.descriptors.size());
        for (size_t i = 0; i < message.descriptors.size(); ++i) {
          const int fd = message.descriptors[i].get();
          std::memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof(int));
        }
      }
      const ssize_t n = ::sendmsg(socket, &header, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) return false;
      FUZZ_CHECK(n > 0, StrCat("sending to the fast path: ", std::strerror(errno),
                               " (a server that stopped reading?)"));
      control.clear();
      text.remove_prefix(static_cast<size_t>(n));
    }
  }
  return true;
}

// Everything the server sends until it closes: the bytes, and the
// descriptors by the stream offset where the read they came with ended. A
// read stops after the bytes of a message that carries descriptors, so
// they belong to the last answer that starts in that read.
struct Received {
  std::string bytes;
  std::map<size_t, std::vector<UniqueFd>> descriptors;
  size_t descriptor_count = 0;

  // The descriptors of the read holding stream offset `offset`, if any.
  const std::vector<UniqueFd>* DescriptorsAt(size_t offset) const {
    auto read = descriptors.upper_bound(offset);
    return read == descriptors.end() ? nullptr : &read->second;
  }
};

void ReceiveAll(int socket, Received* received) {
  std::vector<char> buffer(64 << 10);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 256)];
  while (true) {
    iovec data{buffer.data(), buffer.size()};
    msghdr header{};
    header.msg_iov = &data;
    header.msg_iovlen = 1;
    header.msg_control = control;
    header.msg_controllen = sizeof(control);
    const ssize_t n = ::recvmsg(socket, &header, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    // A server that closes with bytes of the client unread resets the
    // stream; what it sent before is read first.
    if (n < 0 && errno == ECONNRESET) return;
    FUZZ_CHECK(n >= 0, StrCat("reading the answers: ", std::strerror(errno),
                              " (no answer and no end of stream within ",
                              kIoTimeoutSeconds, " s: a hang)"));
    FUZZ_CHECK((header.msg_flags & MSG_CTRUNC) == 0, "more descriptors than an answer may carry");
    const size_t read_end = received->bytes.size() + static_cast<size_t>(std::max<ssize_t>(n, 0));
    for (cmsghdr* c = CMSG_FIRSTHDR(&header); c != nullptr; c = CMSG_NXTHDR(&header, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        received->descriptors[read_end].emplace_back(fd);
        ++received->descriptor_count;
      }
    }
    if (n == 0) return;
    received->bytes.append(buffer.data(), static_cast<size_t>(n));
  }
}

std::vector<std::string_view> Split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  while (true) {
    const size_t at = text.find(separator);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return parts;
    text.remove_prefix(at + 1);
  }
}

uint64_t Number(std::string_view text) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  FUZZ_CHECK(ec == std::errc() && end == text.data() + text.size() && !text.empty(),
             StrCat("not a number in an answer: \"", text, "\""));
  return n;
}

// Reads the answer stream line by line.
class AnswerReader {
 public:
  explicit AnswerReader(const Received& received) : received_(received) {}
  bool AtEnd() const { return pos_ == received_.bytes.size(); }
  size_t offset() const { return pos_; }
  std::string_view NextLine() {
    const std::string_view rest = std::string_view(received_.bytes).substr(pos_);
    const size_t newline = rest.find('\n');
    FUZZ_CHECK(newline != std::string_view::npos,
               StrCat("an answer without its newline: \"", rest.substr(0, 200), "\""));
    pos_ += newline + 1;
    return rest.substr(0, newline);
  }

 private:
  const Received& received_;
  size_t pos_ = 0;
};

bool ClosesConnection(std::string_view error) {
  return error.find("a request line is at most") != std::string_view::npos ||
         error.find("descriptors came with one request line") != std::string_view::npos ||
         error.find("the fast path is turned off") != std::string_view::npos;
}

std::string Pread(int fd, uint64_t offset, uint64_t length) {
  std::string bytes(length, '\0');
  const ssize_t n = ::pread(fd, bytes.data(), length, static_cast<off_t>(offset));
  FUZZ_CHECK(n == static_cast<ssize_t>(length),
             StrCat("a located object's bytes cannot be read: ", n, " of ", length));
  return bytes;
}

// One LOCATE answer, after its "OK <n>" line.
void CheckLocate(std::string_view arguments, uint64_t files, const std::vector<UniqueFd>* fds,
                 AnswerReader& answers) {
  if (files > 0) {
    FUZZ_CHECK(fds != nullptr && fds->size() == files,
               StrCat("OK ", files, " came with ", fds == nullptr ? 0 : fds->size(),
                      " descriptors"));
  }
  bool any_answered = false;
  for (std::string_view key : Split(arguments, ' ')) {
    const std::string_view line = answers.NextLine();
    const std::vector<std::string_view> words = Split(line, ' ');
    FUZZ_CHECK(words[0] == key, StrCat("answer \"", line, "\" for key ", key));
    if (words.size() == 2 && (words[1] == "missing" || words[1] == "again")) {
      any_answered |= words[1] == "missing";
      continue;
    }
    FUZZ_CHECK(words.size() == 6, StrCat("a malformed location: \"", line, "\""));
    any_answered = true;
    const uint64_t file = Number(words[1]);
    const uint64_t offset = Number(words[2]);
    const uint64_t length = Number(words[3]);
    const uint64_t size = Number(words[4]);
    FUZZ_CHECK(file < files, StrCat("descriptor ", file, " of ", files));
    FUZZ_CHECK(size <= FuzzStore::kMaxObjectSize, std::string(line));
    const std::string stored = Pread((*fds)[file].get(), offset, length);
    std::string content;
    if (words[5] == "none") {
      FUZZ_CHECK(length == size, std::string(line));
      content = stored;
    } else {
      FUZZ_CHECK(words[5] == "zlib" || words[5] == "zstd", std::string(line));
      absl::StatusOr<std::string> decoded = DecompressAll(
          words[5] == "zlib" ? CodecKind::kZlib : CodecKind::kZstd, stored, size);
      FUZZ_CHECK(decoded.ok(), decoded.status().ToString());
      content = std::move(*decoded);
    }
    FUZZ_CHECK(Hasher::Hash(HashType::kSha256, content) == key,
               StrCat("the bytes located for ", key, " are another object's"));
  }
  FUZZ_CHECK(any_answered, "a LOCATE answer with every key deferred");
}

void CheckAnswers(const std::vector<std::string>& lines, const std::vector<std::string>& put_content,
                  const Received& received) {
  AnswerReader answers(received);
  uint64_t descriptors_answered = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const size_t answer_offset = answers.offset();
    FUZZ_CHECK(!answers.AtEnd(), StrCat("request ", i, " of ", lines.size(), " (\"",
                                        std::string_view(lines[i]).substr(0, 100),
                                        "\") got no answer"));
    const std::string_view line = answers.NextLine();
    if (lines[i].size() + 1 > FastPathServer::kMaxLineBytes) {
      FUZZ_CHECK(line == "ERR INVALID_ARGUMENT a request line is at most 1048576 bytes with its "
                         "newline",
                 StrCat("a line of ", lines[i].size() + 1, " bytes was answered \"",
                        line.substr(0, 200), "\""));
      break;
    }
    if (line.starts_with("ERR ")) {
      const std::vector<std::string_view> words = Split(line, ' ');
      FUZZ_CHECK(words.size() >= 3 && !words[1].empty(), std::string(line));
      if (ClosesConnection(line)) break;
      continue;
    }
    FUZZ_CHECK(line.starts_with("OK "), StrCat("answer \"", line.substr(0, 200), "\""));
    const std::string_view request = std::string_view(lines[i]).substr(6);  // "PSFD1 "
    if (request.starts_with("LOCATE ")) {
      const uint64_t files = Number(line.substr(3));
      descriptors_answered += files;
      CheckLocate(request.substr(7), files, received.DescriptorsAt(answer_offset), answers);
      continue;
    }
    FUZZ_CHECK(request.starts_with("PUT "), StrCat("OK for \"", request.substr(0, 100), "\""));
    const std::vector<std::string_view> words = Split(line, ' ');
    FUZZ_CHECK(words.size() == 3 && ValidateKey(words[1], HashType::kSha256).ok(),
               std::string(line));
    if (!put_content[i].empty()) {
      // Sent line by line: the file held the line itself.
      FUZZ_CHECK(words[1] == Hasher::Hash(HashType::kSha256, put_content[i]) &&
                     Number(words[2]) == put_content[i].size(),
                 StrCat("PUT stored another file: ", line));
    }
  }
  FUZZ_CHECK(answers.AtEnd(), StrCat("bytes after the last answer: \"",
                                     received.bytes.substr(answers.offset(), 200), "\""));
  FUZZ_CHECK(descriptors_answered == received.descriptor_count,
             StrCat(received.descriptor_count, " descriptors came with answers that announced ",
                    descriptors_answered));
}

}  // namespace
}  // namespace packstore::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  packstore::fuzz::FuzzStore::Get();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace packstore;
  using namespace packstore::fuzz;
  if (size == 0) return -1;
  const uint8_t flags = data[0];
  std::string stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  const bool one_message = (flags & 1) != 0;
  const bool enabled = (flags & 2) == 0;
  if ((flags & 4) != 0) {
    if (stream.size() < 3) return -1;
    const size_t padding =
        (static_cast<uint8_t>(stream[0]) | static_cast<uint8_t>(stream[1]) << 8 |
         static_cast<uint8_t>(stream[2]) << 16) % (kMaxPadding + 1);
    stream.erase(0, 3);
    stream.insert(std::min(stream.find('\n'), stream.size()), padding, 'a');
  }

  FuzzStore& store = FuzzStore::Get();
  store.StartInput();

  // The requests as the server will see them: complete lines.
  std::vector<std::string> lines;
  std::vector<std::string> put_content;  // per line: what its PUT file holds
  std::vector<Message> messages;
  for (size_t begin = 0; begin < stream.size();) {
    const size_t newline = stream.find('\n', begin);
    const size_t end = newline == std::string::npos ? stream.size() : newline + 1;
    const std::string chunk = stream.substr(begin, end - begin);
    begin = end;
    size_t descriptors = static_cast<size_t>(std::count(chunk.begin(), chunk.end(), '@'));
    if (chunk.starts_with("PSFD1 PUT ")) ++descriptors;
    descriptors = std::min(descriptors, kMaxDescriptorsSent);
    if (one_message || messages.empty()) messages.emplace_back();
    if (!one_message && !messages.back().bytes.empty()) messages.emplace_back();
    for (size_t i = 0; i < descriptors; ++i) messages.back().descriptors.push_back(FileHolding(chunk));
    messages.back().bytes += chunk;
    // The server takes a line up to kMaxLineBytes with its newline, and
    // refuses one that passes it, complete or not.
    if (newline != std::string::npos || chunk.size() >= FastPathServer::kMaxLineBytes) {
      lines.push_back(chunk.substr(0, chunk.size() - (newline != std::string::npos ? 1 : 0)));
      put_content.push_back(one_message ? std::string() : chunk);
    }
  }

  int pair[2];
  FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0, "socketpair");
  UniqueFd client(pair[0]);
  SetTimeouts(client.get());
  FastPathServer server(store.service(), enabled);
  server.Serve(UniqueFd(pair[1]), store.self());

  Received received;
  std::thread reader([&] { ReceiveAll(client.get(), &received); });
  if (SendAll(client.get(), messages)) ::shutdown(client.get(), SHUT_WR);
  reader.join();
  FUZZ_CHECK(server.Stop(absl::Now() + absl::Seconds(kIoTimeoutSeconds)),
             "a connection thread still runs after its client closed");

  if (!enabled) {
    FUZZ_CHECK(received.bytes == "ERR UNAVAILABLE the fast path is turned off (--fast-path)\n",
               received.bytes);
    return 0;
  }
  CheckAnswers(lines, put_content, received);
  return 0;
}
