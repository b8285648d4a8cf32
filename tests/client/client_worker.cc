// A client process for the cross-language suite (tests/interop), using the
// C++ client library:
//
//   client_worker write SOCKET SEED KEYFILE   store objects made from SEED
//                                             (Put, PutMany, PutStream, PutFile)
//                                             and write "<key> <size>" lines
//                                             to KEYFILE (atomically)
//   client_worker read SOCKET KEYFILE...      read every listed object back
//                                             (Get, GetMany, Open with seeks)
//                                             and check its size and digest
//
// Exit code 0 when every call succeeded and every byte matched, 1 otherwise,
// with what went wrong on stderr.
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/hasher.h"
#include "packstore/client.h"

namespace {

namespace ps = packstore::client;

std::string Sha256(std::string_view data) {
  return packstore::Hasher::Hash(packstore::HashType::kSha256, data);
}

std::string Bytes(uint64_t seed, size_t size) {
  std::mt19937_64 rng(seed);
  std::string out(size, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

int Fail(const std::string& what) {
  std::cerr << "client_worker: " << what << "\n";
  return 1;
}

int Write(ps::Client& client, uint64_t seed, const std::string& keyfile) {
  std::vector<std::pair<std::string, uint64_t>> stored;
  auto record = [&](const absl::StatusOr<ps::ObjectRef>& ref, std::string_view data) {
    if (!ref.ok()) return ref.status();
    if (ref->key != Sha256(data) || ref->size != data.size()) {
      return absl::DataLossError("the daemon answered a wrong key for " + ref->key);
    }
    stored.emplace_back(ref->key, ref->size);
    return absl::OkStatus();
  };
  for (int i = 0; i < 20; ++i) {
    const std::string data = Bytes(seed * 1000 + i, 100 + 977 * i);
    const ps::PutMode mode = i % 3 == 0 ? ps::PutMode::kLoose : ps::PutMode::kPacked;
    absl::Status status = record(client.Put(data, {mode, ps::Compression::kAuto}), data);
    if (!status.ok()) return Fail("Put: " + status.ToString());
  }
  std::vector<std::string> many;
  for (int i = 0; i < 200; ++i) many.push_back(Bytes(seed * 1000 + 100 + i, 1024 + i));
  std::vector<std::string_view> views(many.begin(), many.end());
  absl::StatusOr<std::vector<ps::ObjectRef>> refs = client.PutMany(views, {ps::PutMode::kPacked, {}});
  if (!refs.ok()) return Fail("PutMany: " + refs.status().ToString());
  for (size_t i = 0; i < many.size(); ++i) {
    if (absl::Status status = record((*refs)[i], many[i]); !status.ok()) {
      return Fail("PutMany: " + status.ToString());
    }
  }
  const std::string big = Bytes(seed * 1000 + 999, (3 << 20) + 7);
  std::istringstream in(big);
  if (absl::Status status = record(client.PutStream(in), big); !status.ok()) {
    return Fail("PutStream: " + status.ToString());
  }
  const std::string path = keyfile + ".input";
  std::ofstream(path, std::ios::binary) << Bytes(seed * 1000 + 998, 70000);
  const std::string file_data = Bytes(seed * 1000 + 998, 70000);
  absl::Status file_status = record(client.PutFile(path), file_data);
  ::unlink(path.c_str());
  if (!file_status.ok()) return Fail("PutFile: " + file_status.ToString());

  const std::string tmp = keyfile + ".tmp";
  {
    std::ofstream out(tmp);
    for (const auto& [key, size] : stored) out << key << " " << size << "\n";
    if (!out.flush()) return Fail("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), keyfile.c_str()) != 0) return Fail("cannot rename " + tmp);
  std::cout << stored.size() << "\n";
  return 0;
}

int Read(ps::Client& client, const std::vector<std::string>& keyfiles) {
  std::map<std::string, uint64_t> expected;
  for (const std::string& file : keyfiles) {
    std::ifstream in(file);
    if (!in) return Fail("cannot read " + file);
    std::string key;
    uint64_t size;
    while (in >> key >> size) expected[key] = size;
  }
  std::vector<std::string> keys;
  for (const auto& [key, size] : expected) keys.push_back(key);
  // Every object whole, then all of them again through one GetMany.
  for (const auto& [key, size] : expected) {
    absl::StatusOr<std::string> data = client.Get(key);
    if (!data.ok()) return Fail("Get " + key + ": " + data.status().ToString());
    if (data->size() != size || Sha256(*data) != key) return Fail("Get " + key + ": wrong bytes");
  }
  std::map<std::string, std::string> assembled;
  absl::Status status = client.GetMany(keys, [&](const ps::ObjectPiece& piece) {
    if (piece.missing) return absl::NotFoundError("GetMany: missing " + std::string(piece.key));
    assembled[std::string(piece.key)].append(piece.data);
    return absl::OkStatus();
  });
  if (!status.ok()) return Fail(status.ToString());
  for (const auto& [key, size] : expected) {
    const std::string& data = assembled[key];
    if (data.size() != size || Sha256(data) != key) return Fail("GetMany " + key + ": wrong bytes");
  }
  // The largest object through a reader, from its middle on.
  auto largest = std::max_element(expected.begin(), expected.end(),
                                  [](const auto& a, const auto& b) { return a.second < b.second; });
  if (largest != expected.end() && largest->second > 0) {
    auto reader = client.Open(largest->first);
    if (!reader.ok()) return Fail("Open: " + reader.status().ToString());
    const uint64_t half = largest->second / 2;
    (*reader)->Seek(half);
    std::string tail(largest->second - half, '\0');
    size_t got = 0;
    while (got < tail.size()) {
      absl::StatusOr<size_t> n = (*reader)->Read(tail.data() + got, tail.size() - got);
      if (!n.ok()) return Fail("Read: " + n.status().ToString());
      if (*n == 0) break;
      got += *n;
    }
    if (got != tail.size() || tail != assembled[largest->first].substr(half)) {
      return Fail("Open " + largest->first + ": wrong bytes after a seek");
    }
  }
  std::cout << expected.size() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() < 3 || (args[0] != "write" && args[0] != "read") ||
      (args[0] == "write" && args.size() != 4)) {
    std::cerr << "usage: client_worker write SOCKET SEED KEYFILE | read SOCKET KEYFILE...\n";
    return 2;
  }
  ps::ClientOptions options;
  options.socket = args[1];
  options.timeout = std::chrono::seconds(120);
  absl::StatusOr<std::unique_ptr<ps::Client>> client = ps::Client::Connect(options);
  if (!client.ok()) return Fail(client.status().ToString());
  if (args[0] == "write") return Write(**client, std::stoull(args[2]), args[3]);
  return Read(**client, std::vector<std::string>(args.begin() + 2, args.end()));
}
