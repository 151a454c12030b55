// agent_footprint: the agent's idle cost with three sample services (process runtime), each
// probed every second, no routes; the services themselves are not counted.
//
//   build/bench/agent_footprint [SECONDS] [BIN_DIR] [MODE] [smaps]
//
// MODE (default `all`, one row each):
//   daemon      a real `upkeep-agent` connected to a real `upkeep-controller` on loopback
//               (plaintext: both on 127.0.0.1) that applied the stack from --manifests: what a
//               host runs in a fleet. Measured from outside, on the agent's pid.
//   standalone  a real `upkeep-agent --standalone -f MANIFEST`: the whole system on one host.
//   observer    the StackObserver alone, in this process (no gRPC, no executor): the floor.
// Columns: RSS (includes every shared library page the process maps, shared with other
// processes), PSS (shared pages divided among their users), USS (private pages: what the
// process alone costs), anonymous memory, threads, CPU share of one core over SECONDS (user +
// system, from /proc/PID/stat), and wake-ups per second (voluntary + involuntary context
// switches of all its threads).
// With `smaps`, each row is followed by where its RSS lies, from /proc/PID/smaps at the end of
// the run: one line per library and segment kind (text r-x; relro r-- whose Private_Dirty is
// what relocation wrote into .data.rel.ro and the GOT; data rw-) and per kind of anonymous
// memory (heap, thread stacks, other), largest first.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "agent/daemon/host.h"
#include "agent/observe/observer.h"
#include "agent/runtime/runtime.h"
#include "core/log.h"
#include "core/manifest/loader.h"
#include "tests/support/net.h"
#include "tests/support/subprocess.h"
#include "tests/support/wait.h"

namespace {

using upkeep::testing::Subprocess;

struct Sample {
  std::map<std::string, long> kb;  // smaps_rollup fields
  double cpu_seconds = 0;
  long switches = 0;
  int threads = 0;
};

Sample Read(pid_t pid) {
  Sample s;
  {
    std::ifstream in(absl::StrCat("/proc/", pid, "/smaps_rollup"));
    std::string line;
    while (std::getline(in, line)) {
      std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      long v = 0;
      if (f.size() >= 2 && f[0].back() == ':' && absl::SimpleAtoi(f[1], &v)) {
        s.kb[f[0].substr(0, f[0].size() - 1)] = v;
      }
    }
  }
  {
    std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
    std::string stat;
    std::getline(in, stat);
    const size_t close = stat.rfind(')');
    if (close != std::string::npos) {
      std::vector<std::string> f = absl::StrSplit(stat.substr(close + 2), ' ');
      // fields[0] is field 3; utime is field 14, stime 15, num_threads 20.
      long ut = 0, st = 0;
      if (f.size() > 17 && absl::SimpleAtoi(f[11], &ut) && absl::SimpleAtoi(f[12], &st)) {
        s.cpu_seconds = static_cast<double>(ut + st) / ::sysconf(_SC_CLK_TCK);
        absl::SimpleAtoi(f[17], &s.threads);
      }
    }
  }
  std::error_code ec;
  for (const auto& t :
       std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/task"), ec)) {
    std::ifstream in(t.path() / "status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0 ||
          line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) {
        s.switches += std::atol(line.c_str() + line.find(':') + 1);
      }
    }
  }
  return s;
}

// One line of the smaps breakdown, in kB.
struct Region {
  long rss = 0, pss = 0, private_dirty = 0, private_clean = 0, size = 0;
};

// Names a mapping from its smaps header line ("addr perms offset dev inode path").
std::string RegionName(const std::vector<std::string>& f, long size_kb) {
  const std::string& perms = f[1];
  std::string path = f.size() >= 6 ? f[5] : "";
  if (path.empty()) {
    // glibc thread stacks are anonymous rw-p mappings of the stack size (8 MB by default, less
    // the guard page); malloc arenas reserve 64 MB heaps.
    if (perms == "---p") return "anon: guard pages / reserved";
    if (size_kb >= 1024 && size_kb <= 8192) return "anon: thread stacks (1-8 MB rw-p)";
    return "anon: other (malloc arenas, mmaps)";
  }
  if (path[0] == '[') return path;
  const std::string base = std::filesystem::path(path).filename().string();
  const char* kind = perms[2] == 'x' ? "text" : perms[1] == 'w' ? "data" : "ro/relro";
  return absl::StrCat(base, " ", kind);
}

void PrintSmaps(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/smaps"));
  std::map<std::string, Region> regions;
  Region* current = nullptr;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.empty()) continue;
    if (f[0].find('-') != std::string::npos && f[0].back() != ':') {  // a mapping's header
      unsigned long lo = 0, hi = 0;
      const size_t dash = f[0].find('-');
      lo = std::stoul(f[0].substr(0, dash), nullptr, 16);
      hi = std::stoul(f[0].substr(dash + 1), nullptr, 16);
      const long size_kb = static_cast<long>((hi - lo) / 1024);
      current = &regions[RegionName(f, size_kb)];
      current->size += size_kb;
      continue;
    }
    long v = 0;
    if (current == nullptr || f.size() < 2 || !absl::SimpleAtoi(f[1], &v)) continue;
    if (f[0] == "Rss:") current->rss += v;
    if (f[0] == "Pss:") current->pss += v;
    if (f[0] == "Private_Dirty:") current->private_dirty += v;
    if (f[0] == "Private_Clean:") current->private_clean += v;
  }
  std::vector<std::pair<std::string, Region>> sorted(regions.begin(), regions.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second.rss > b.second.rss; });
  std::printf(
      "\n| mapping | RSS kB | PSS kB | Private_Dirty kB | Private_Clean kB |\n"
      "|---|---|---|---|---|\n");
  Region total;
  for (const auto& [name, r] : sorted) {
    total.rss += r.rss;
    total.pss += r.pss;
    total.private_dirty += r.private_dirty;
    total.private_clean += r.private_clean;
    if (r.rss < 64) continue;
    std::printf("| %s | %ld | %ld | %ld | %ld |\n", name.c_str(), r.rss, r.pss, r.private_dirty,
                r.private_clean);
  }
  std::printf("| total | %ld | %ld | %ld | %ld |\n\n", total.rss, total.pss, total.private_dirty,
              total.private_clean);
}

void PrintRow(const std::string& mode, double wall, const Sample& a, const Sample& b) {
  auto mb = [&](const char* k) {
    auto it = b.kb.find(k);
    return it == b.kb.end() ? -1.0 : it->second / 1024.0;
  };
  const double uss = mb("Private_Clean") + mb("Private_Dirty");
  std::printf("| %s | %.0f | %.1f | %.1f | %.1f | %.1f | %d | %.3f %% | %.1f |\n", mode.c_str(),
              wall, mb("Rss"), mb("Pss"), uss, mb("Anonymous"), b.threads,
              100.0 * (b.cpu_seconds - a.cpu_seconds) / wall, (b.switches - a.switches) / wall);
}

std::string Manifest(const std::string& bin, std::vector<int>* ports) {
  std::string yaml =
      "apiVersion: upkeep/v1\nkind: Stack\nmetadata: {name: fp}\nspec:\n"
      "  hosts: [h]\n  runtime: process\n  services:\n";
  for (const char* name : {"a", "b", "c"}) {
    const int port = upkeep::testing::FreePort();
    ports->push_back(port);
    yaml += absl::StrCat("    - {name: ", name, ", port: ", port, ", process: {command: [", bin,
                         "/upkeep-sample-service, --port, \"", port,
                         "\"]}, probe: {http: {path: /health}, period: 1s}}\n");
  }
  return yaml;
}

// Set by the `smaps` argument: Measure prints PrintSmaps after its row.
bool g_smaps = false;

// Measures `pid` over `seconds` once the services answer and `warm` has passed.
bool Measure(const std::string& mode, pid_t pid, const std::vector<int>& ports, int seconds) {
  for (int port : ports) {
    if (!upkeep::testing::WaitForPort("127.0.0.1", port, absl::Seconds(20))) {
      std::fprintf(stderr, "agent_footprint %s: service on port %d never answered\n", mode.c_str(),
                   port);
      return false;
    }
  }
  absl::SleepFor(absl::Seconds(3));  // warm-up: first probes judged, first reports sent
  const Sample a = Read(pid);
  const absl::Time t0 = absl::Now();
  absl::SleepFor(absl::Seconds(seconds));
  const Sample b = Read(pid);
  PrintRow(mode, absl::ToDoubleSeconds(absl::Now() - t0), a, b);
  if (g_smaps) PrintSmaps(pid);
  std::fflush(stdout);
  return true;
}

int RunProcess(const std::string& mode, int seconds, const std::string& bin) {
  char tmpl[] = "/tmp/upkeep-footprint-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  std::filesystem::create_directories(dir + "/manifests");
  std::vector<int> ports;
  {
    std::ofstream out(dir + "/manifests/fp.yaml");
    out << Manifest(bin, &ports);
  }
  std::unique_ptr<Subprocess> controller;
  std::vector<std::string> argv;
  if (mode == "daemon") {
    const int grpc_port = upkeep::testing::FreePort();
    auto c = Subprocess::Start({bin + "/upkeep-controller", "--data", dir + "/controller",
                                "--listen", absl::StrCat("127.0.0.1:", grpc_port), "--http",
                                absl::StrCat("127.0.0.1:", upkeep::testing::FreePort()),
                                "--manifests", dir + "/manifests"},
                               dir + "/controller.log");
    if (!c.ok()) {
      std::fprintf(stderr, "agent_footprint: %s\n", std::string(c.status().message()).c_str());
      return 1;
    }
    controller = std::move(*c);
    argv = {bin + "/upkeep-agent",
            "--controller",
            absl::StrCat("127.0.0.1:", grpc_port),
            "--host-id",
            "h",
            "--data",
            dir + "/agent",
            "--allow-exec",
            bin};
  } else {
    argv = {bin + "/upkeep-agent", "--standalone", "-f", dir + "/manifests", "--data",
            dir + "/agent",        "--allow-exec", bin};
  }
  auto agent = Subprocess::Start(argv, dir + "/agent.log");
  if (!agent.ok()) {
    std::fprintf(stderr, "agent_footprint: %s\n", std::string(agent.status().message()).c_str());
    return 1;
  }
  const bool ok = Measure(mode, (*agent)->pid(), ports, seconds);
  (*agent)->Stop();
  if (controller) controller->Stop();
  // The services outlive the agent by design: stop them through a one-shot runtime.
  std::unique_ptr<upkeep::agent::Host> host = upkeep::agent::MakeHost({dir + "/agent", ""});
  const auto loaded = upkeep::manifest::LoadPath(dir + "/manifests");
  if (loaded.ok()) {
    auto rt = host->runtimes.Get(loaded.stacks[0]);
    if (rt.ok()) {
      for (const auto& s : loaded.stacks[0].spec().services())
        (void)(*rt)->Stop(s, absl::Seconds(2));
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return ok ? 0 : 1;
}

int RunObserver(int seconds, const std::string& bin) {
  char tmpl[] = "/tmp/upkeep-footprint-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  std::vector<int> ports;
  const auto loaded = upkeep::manifest::LoadString(Manifest(bin, &ports), "footprint.yaml");
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.errors[0].ToString().c_str());
    return 1;
  }
  const upkeep::v1::Stack& stack = loaded.stacks[0];
  std::unique_ptr<upkeep::agent::Host> host = upkeep::agent::MakeHost({dir, ""});
  auto observer = upkeep::agent::StackObserver::Create({"h"}, &host->runtimes, &host->proxies);
  (*observer)->SetDesired({stack});
  upkeep::agent::Runtime* rt = *host->runtimes.Get(stack);
  for (const auto& s : stack.spec().services()) (void)rt->Start(s);
  (*observer)->Start([](const upkeep::v1::StackObservation&, bool) {});
  const bool ok = Measure("observer (in process)", ::getpid(), ports, seconds);
  (*observer)->Stop();
  for (const auto& s : stack.spec().services()) (void)rt->Stop(s, absl::Seconds(2));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // The runtimes' own log lines (process started/exited) are not part of the table.
  upkeep::InitLogging("bench", false, spdlog::level::warn);
  const int seconds = argc > 1 ? std::atoi(argv[1]) : 30;
  const std::string bin = std::filesystem::absolute(argc > 2 ? argv[2] : "build/bin").string();
  const std::string mode = argc > 3 ? argv[3] : "all";
  g_smaps = argc > 4 && std::string(argv[4]) == "smaps";
  if (mode != "all" && mode != "daemon" && mode != "standalone" && mode != "observer") {
    std::fprintf(stderr, "agent_footprint: MODE is daemon, standalone, observer or all\n");
    return 2;
  }
  std::printf(
      "| agent | seconds | RSS MB | PSS MB | USS MB | anon MB | threads | CPU share of one core "
      "| wake-ups/s |\n|---|---|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);
  int rc = 0;
  if (mode == "all" || mode == "daemon") rc |= RunProcess("daemon", seconds, bin);
  std::fflush(stdout);
  if (mode == "all" || mode == "standalone") rc |= RunProcess("standalone", seconds, bin);
  std::fflush(stdout);
  // Last: it loads the agent's libraries into this process.
  if (mode == "all" || mode == "observer") rc |= RunObserver(seconds, bin);
  return rc;
}
