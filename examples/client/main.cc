// Stores its arguments (or a greeting) through packstored, reads each one
// back whole and through a seekable reader, and prints its key.
//
//   PACKSTORE_SOCKET=/run/packstore/packstore.sock packstore_example hello world
#include <packstore/client.h>

#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  std::vector<std::string> texts(argv + 1, argv + argc);
  if (texts.empty()) texts.push_back("hello from the packstore example");

  absl::StatusOr<std::unique_ptr<packstore::client::Client>> client =
      packstore::client::Client::Connect();
  if (!client.ok()) {
    std::cerr << "packstore_example: " << client.status() << "\n";
    return 2;
  }
  for (const std::string& text : texts) {
    absl::StatusOr<packstore::client::ObjectRef> ref =
        (*client)->Put(text, {packstore::client::PutMode::kPacked, {}});
    if (!ref.ok()) {
      std::cerr << "packstore_example: put: " << ref.status() << "\n";
      return 2;
    }
    absl::StatusOr<std::string> back = (*client)->Get(ref->key, /*verify=*/true);
    if (!back.ok() || *back != text) {
      std::cerr << "packstore_example: read back: " << back.status() << "\n";
      return 1;
    }
    auto reader = (*client)->Open(ref->key);
    std::string tail(text.size() / 2 + 1, '\0');
    if (!reader.ok()) {
      std::cerr << "packstore_example: open: " << reader.status() << "\n";
      return 1;
    }
    (*reader)->Seek(text.size() / 2);
    absl::StatusOr<size_t> n = (*reader)->Read(tail.data(), tail.size());
    if (!n.ok() || tail.substr(0, *n) != text.substr(text.size() / 2)) {
      std::cerr << "packstore_example: seek and read: " << n.status() << "\n";
      return 1;
    }
    std::cout << ref->key << "  " << text << "\n";
  }
  return 0;
}
