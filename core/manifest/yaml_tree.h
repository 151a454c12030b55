// A YAML text read into an immutable tree of nodes that know their line, through libyaml's event
// parser (libyaml 0.2.5; why libyaml: docs/manifest.md, "Parser"). The manifest loader walks
// this tree; nothing else sees libyaml.
//
// Bounded by construction, so that no input can make the caller wait: parsing stops at the
// first syntax error, at the first collection nested deeper than `max_depth` (libyaml's scanner
// is quadratic in flow nesting when left to run), and at the first alias that makes a document
// expand to more than `max_expanded_nodes` ("billion laughs"). An alias points at its anchored
// node, so the tree is a DAG; an alias to a node that contains it (a cycle) is an error.
//
// Pure; a YamlStream is immutable after Parse and safe to read from several threads.
#ifndef UPKEEP_CORE_MANIFEST_YAML_TREE_H_
#define UPKEEP_CORE_MANIFEST_YAML_TREE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace upkeep::manifest {

class YamlNode {
 public:
  enum class Kind { kNull, kScalar, kSequence, kMapping };
  using Entry = std::pair<const YamlNode*, const YamlNode*>;  // key, value

  Kind kind() const { return kind_; }
  bool IsNull() const { return kind_ == Kind::kNull; }
  bool IsScalar() const { return kind_ == Kind::kScalar; }
  bool IsSequence() const { return kind_ == Kind::kSequence; }
  bool IsMap() const { return kind_ == Kind::kMapping; }
  // 1-based line where the node (or, for an alias, its anchored node) starts.
  int line() const { return line_; }
  // The text of a scalar, as written after unquoting; empty for other kinds.
  const std::string& scalar() const { return scalar_; }
  const std::vector<const YamlNode*>& items() const { return items_; }
  const std::vector<Entry>& entries() const { return entries_; }
  // The value of the first entry whose key is the scalar `key`; nullptr when there is none.
  const YamlNode* Get(absl::string_view key) const;

 private:
  friend class YamlStreamBuilder;
  Kind kind_ = Kind::kNull;
  int line_ = 0;
  bool open_ = false;     // a collection still being read (an alias to it is a cycle)
  int64_t expanded_ = 1;  // nodes when every alias below is expanded (saturating)
  std::string scalar_;
  std::vector<const YamlNode*> items_;
  std::vector<Entry> entries_;
};

struct YamlLimits {
  int max_depth = 64;
  int64_t max_expanded_nodes = 100000;
};

// Every document of one YAML text, or the first error in it.
class YamlStream {
 public:
  struct Document {
    const YamlNode* root;  // never null; an empty document is a Null node
    int line;              // 1-based line of its start
  };
  struct Error {
    int line;  // 1-based; 0 when unknown
    std::string message;
  };

  // Reads `text` as UTF-8. On error, documents() is empty and error() says what and where.
  static YamlStream Parse(absl::string_view text, const YamlLimits& limits = YamlLimits());

  bool ok() const { return error_.message.empty(); }
  const Error& error() const { return error_; }
  const std::vector<Document>& documents() const { return documents_; }

 private:
  friend class YamlStreamBuilder;
  std::unique_ptr<std::deque<YamlNode>> nodes_ = std::make_unique<std::deque<YamlNode>>();
  std::vector<Document> documents_;
  Error error_{0, ""};
};

}  // namespace upkeep::manifest

#endif  // UPKEEP_CORE_MANIFEST_YAML_TREE_H_
