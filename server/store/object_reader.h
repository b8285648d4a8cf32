// ObjectReader: streams one stored object in constant memory, with seeks,
// from a pack (compressed or not) or a loose file.
//
// The reader holds its file open, so it keeps reading the right bytes after
// a repack unlinks the pack or clean removes the loose file.
// Seeking within a compressed object decompresses from the start of the
// object (zlib and zstd streams have no random access): a forward seek costs
// the bytes skipped, a backward seek restarts.
//
// Thread-safety: one thread at a time.
//
// Errors: DATA_LOSS, naming the object, when stored bytes end early, do not
// decompress, or decompress to a size other than the recorded one; I/O
// errors as mapped.
//
//   PACKSTORE_ASSIGN_OR_RETURN(auto reader, container->OpenObject(key));
//   reader->Seek(1 << 20);
//   PACKSTORE_ASSIGN_OR_RETURN(size_t n, reader->Read(buf, sizeof(buf)));
#ifndef PACKSTORE_SERVER_STORE_OBJECT_READER_H_
#define PACKSTORE_SERVER_STORE_OBJECT_READER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/codec.h"
#include "server/store/stored_file.h"

namespace packstore {

class ObjectReader {
 public:
  // Reads object `key` (named in errors), of `size` bytes stored at
  // [offset, offset + length) of `file`. `compressed` means the stored bytes
  // are a `kind` stream.
  ObjectReader(std::string key, std::shared_ptr<const StoredFile> file, uint64_t offset,
               uint64_t length, uint64_t size, bool compressed, CodecKind kind);
  ~ObjectReader();

  uint64_t size() const { return size_; }
  uint64_t position() const { return position_; }
  bool compressed() const { return compressed_; }

  // Reads up to `capacity` bytes at the current position; 0 at the end.
  absl::StatusOr<size_t> Read(char* buf, size_t capacity);
  // OUT_OF_RANGE for a position past the end (the end itself is allowed).
  absl::Status Seek(uint64_t position);
  // Reads everything from the current position to the end.
  absl::StatusOr<std::string> ReadRest();

 private:
  absl::Status Restart();
  absl::StatusOr<size_t> ReadCompressed(char* buf, size_t capacity);

  const std::string key_;
  std::shared_ptr<const StoredFile> file_;
  const uint64_t offset_;
  const uint64_t length_;
  const uint64_t size_;
  const bool compressed_;
  const CodecKind kind_;
  uint64_t position_ = 0;
  // Compressed objects only.
  std::unique_ptr<Decompressor> decompressor_;
  std::string input_;
  uint64_t input_consumed_ = 0;  // stored bytes fed so far
};

// DATA_LOSS for object `key`, whose stored bytes do not decode: `error` is
// the decoder's, which names neither the object nor the remedy.
absl::Status UndecodableObject(std::string_view key, const absl::Status& error);
// `error` from reading object `key`'s stored bytes, naming the object when it
// is DATA_LOSS (a file shorter than the index says, say); others unchanged.
absl::Status ObjectReadError(std::string_view key, const absl::Status& error);

}  // namespace packstore

#endif  // PACKSTORE_SERVER_STORE_OBJECT_READER_H_
