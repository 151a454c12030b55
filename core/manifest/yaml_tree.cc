#include "core/manifest/yaml_tree.h"

#include <yaml.h>

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"

namespace upkeep::manifest {

const YamlNode* YamlNode::Get(absl::string_view key) const {
  for (const auto& [k, v] : entries_) {
    if (k->IsScalar() && k->scalar() == key) return v;
  }
  return nullptr;
}

// Turns libyaml's events into nodes, enforcing the limits as it goes.
class YamlStreamBuilder {
 public:
  YamlStreamBuilder(absl::string_view text, const YamlLimits& limits, YamlStream* out)
      : text_(text), limits_(limits), out_(out) {}

  void Run() {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
      Fail(0, "out of memory");
      return;
    }
    yaml_parser_set_input_string(&parser, reinterpret_cast<const unsigned char*>(text_.data()),
                                 text_.size());
    yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
    bool done = false;
    while (!done && out_->ok()) {
      yaml_event_t event;
      if (!yaml_parser_parse(&parser, &event)) {
        FailFromParser(parser);
        break;
      }
      done = event.type == YAML_STREAM_END_EVENT;
      OnEvent(event);
      yaml_event_delete(&event);
    }
    yaml_parser_delete(&parser);
    if (!out_->ok()) out_->documents_.clear();
  }

 private:
  static std::string Str(const yaml_char_t* s) {
    return s == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(s));
  }

  void Fail(int line, std::string message) {
    if (out_->ok()) out_->error_ = {line, std::move(message)};
  }

  void FailFromParser(const yaml_parser_t& p) {
    const std::string problem = p.problem != nullptr ? p.problem : "cannot parse";
    switch (p.error) {
      case YAML_MEMORY_ERROR:
        Fail(0, "invalid YAML: out of memory");
        return;
      case YAML_READER_ERROR: {
        const size_t offset = std::min(p.problem_offset, text_.size());
        const int line =
            1 + static_cast<int>(std::count(text_.begin(), text_.begin() + offset, '\n'));
        std::string msg = absl::StrCat("invalid YAML: ", problem);
        if (p.problem_value != -1) absl::StrAppend(&msg, " (0x", absl::Hex(p.problem_value), ")");
        absl::StrAppend(&msg, " at byte ", offset, "; manifests are UTF-8 text");
        Fail(line, msg);
        return;
      }
      default: {
        std::string msg = absl::StrCat("invalid YAML: ", problem);
        if (p.context != nullptr) {
          absl::StrAppend(&msg, " (", p.context, " started at line ", p.context_mark.line + 1, ")");
        }
        Fail(static_cast<int>(p.problem_mark.line) + 1, msg);
        return;
      }
    }
  }

  YamlNode* NewNode(YamlNode::Kind kind, const yaml_mark_t& mark) {
    YamlNode& n = out_->nodes_->emplace_back();
    n.kind_ = kind;
    n.line_ = static_cast<int>(mark.line) + 1;
    return &n;
  }

  void Anchor(const yaml_char_t* anchor, YamlNode* node) {
    if (anchor != nullptr) anchors_[Str(anchor)] = node;
  }

  static int64_t SaturatingAdd(int64_t a, int64_t b) {
    constexpr int64_t kCap = int64_t{1} << 40;
    return std::min(kCap, a + b);
  }

  // Places `node` in the open collection, or makes it the document's root.
  void Attach(const YamlNode* node) {
    if (open_.empty()) {
      root_ = node;
      return;
    }
    YamlNode* parent = open_.back();
    if (parent->IsSequence()) {
      parent->items_.push_back(node);
    } else if (pending_key_.back() == nullptr) {
      pending_key_.back() = node;
    } else {
      parent->entries_.emplace_back(pending_key_.back(), node);
      pending_key_.back() = nullptr;
    }
  }

  // Counts `nodes` more (an alias counts its whole subtree) into the open collection and the
  // document, and stops the parse when the document grows past the limit.
  void Count(int64_t nodes, bool into_parent, int line) {
    if (into_parent && !open_.empty()) {
      open_.back()->expanded_ = SaturatingAdd(open_.back()->expanded_, nodes);
    }
    doc_expanded_ = SaturatingAdd(doc_expanded_, nodes);
    if (doc_expanded_ > limits_.max_expanded_nodes) {
      Fail(line, absl::StrCat("this document holds more than ", limits_.max_expanded_nodes,
                              " nodes, an alias counting as all the nodes it names (a \"billion "
                              "laughs\"?); the limit is ",
                              limits_.max_expanded_nodes));
    }
  }

  void Open(YamlNode::Kind kind, const yaml_event_t& e, const yaml_char_t* anchor) {
    const int line = static_cast<int>(e.start_mark.line) + 1;
    if (static_cast<int>(open_.size()) >= limits_.max_depth) {
      Fail(line, absl::StrCat("nesting is deeper than ", limits_.max_depth,
                              " levels; the limit is ", limits_.max_depth));
      return;
    }
    YamlNode* n = NewNode(kind, e.start_mark);
    n->open_ = true;
    Anchor(anchor, n);
    Attach(n);
    Count(1, /*into_parent=*/false, line);  // into the parent when closed, with its subtree
    open_.push_back(n);
    pending_key_.push_back(nullptr);
  }

  void Close() {
    YamlNode* n = open_.back();
    open_.pop_back();
    pending_key_.pop_back();
    n->open_ = false;
    if (!open_.empty()) {
      open_.back()->expanded_ = SaturatingAdd(open_.back()->expanded_, n->expanded_);
    }
  }

  void OnEvent(const yaml_event_t& e) {
    const int line = static_cast<int>(e.start_mark.line) + 1;
    switch (e.type) {
      case YAML_DOCUMENT_START_EVENT:
        anchors_.clear();
        root_ = nullptr;
        doc_expanded_ = 0;
        doc_line_ = line;
        break;
      case YAML_DOCUMENT_END_EVENT:
        if (root_ == nullptr) root_ = NewNode(YamlNode::Kind::kNull, e.start_mark);
        out_->documents_.push_back({root_, doc_line_});
        break;
      case YAML_SCALAR_EVENT: {
        const auto& s = e.data.scalar;
        const std::string value(reinterpret_cast<const char*>(s.value), s.length);
        const bool null = s.style == YAML_PLAIN_SCALAR_STYLE &&
                          (value.empty() || value == "~" || value == "null" || value == "Null" ||
                           value == "NULL");
        YamlNode* n = NewNode(null ? YamlNode::Kind::kNull : YamlNode::Kind::kScalar, e.start_mark);
        if (!null) n->scalar_ = value;
        Anchor(s.anchor, n);
        Attach(n);
        Count(1, /*into_parent=*/true, line);
        break;
      }
      case YAML_ALIAS_EVENT: {
        const std::string name = Str(e.data.alias.anchor);
        auto it = anchors_.find(name);
        if (it == anchors_.end()) {
          Fail(line, absl::StrCat("invalid YAML: alias *", name, " names no anchor before it"));
        } else if (it->second->open_) {
          Fail(line, absl::StrCat("invalid YAML: alias *", name,
                                  " is inside the node it names (a cycle)"));
        } else {
          Attach(it->second);
          Count(it->second->expanded_, /*into_parent=*/true, line);
        }
        break;
      }
      case YAML_SEQUENCE_START_EVENT:
        Open(YamlNode::Kind::kSequence, e, e.data.sequence_start.anchor);
        break;
      case YAML_MAPPING_START_EVENT:
        Open(YamlNode::Kind::kMapping, e, e.data.mapping_start.anchor);
        break;
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT:
        if (!open_.empty()) Close();
        break;
      default:
        break;
    }
  }

  absl::string_view text_;
  YamlLimits limits_;
  YamlStream* out_;
  std::map<std::string, YamlNode*> anchors_;
  std::vector<YamlNode*> open_;
  std::vector<const YamlNode*> pending_key_;  // per open collection: a mapping's key read so far
  const YamlNode* root_ = nullptr;
  int64_t doc_expanded_ = 0;
  int doc_line_ = 1;
};

YamlStream YamlStream::Parse(absl::string_view text, const YamlLimits& limits) {
  YamlStream out;
  YamlStreamBuilder(text, limits, &out).Run();
  return out;
}

}  // namespace upkeep::manifest
