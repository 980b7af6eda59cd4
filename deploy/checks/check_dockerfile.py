"""Checks of deploy/Dockerfile and .dockerignore that need no Docker engine (check.sh also runs
hadolint): the file parses (dockerfile-parse), the build stage runs the locked release build of
the binary, and the runtime stage is small, non-root, and holds the binary only. And the build
context: the repository filtered by .dockerignore as Docker filters it, copied where the build
stage's COPY instructions put it, must hold a workspace cargo can load with `--locked` (every
member, the lock file matching) and every tracked file of the members and of proto/.

    check_dockerfile.py [--dockerignore FILE]   # FILE instead of .dockerignore (to try a change)
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from dockerfile_parse import DockerfileParser

from common import DEPLOY, ROOT, Failures


# ------------------------------------------------------------------------ .dockerignore rules

@dataclass(frozen=True)
class IgnoreRule:
    pattern: str  # cleaned, relative to the context, `/`-separated
    exception: bool  # a `!` line: re-includes what earlier lines excluded
    regex: re.Pattern


def _compile(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as Docker matches it (Go's filepath.Match, plus `**`): `*` and `?`
    stop at `/`, `**` spans any number of directories (none included), `[...]` is a class and
    `\\` escapes; the pattern must match the whole path."""
    out = ["^"]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i + 1:i + 2] == "*":
                i += 1
                if pattern[i + 1:i + 2] == "/":
                    i += 1  # `**/` is `**`
                out.append(".*" if i + 1 >= len(pattern) else "(.*/)?")
            else:
                out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise ValueError(f"unterminated [ in {pattern!r}")
            out.append("[" + pattern[i + 1:end] + "]")  # `[^...]` negates in both syntaxes
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    out.append("$")
    return re.compile("".join(out))


def parse_dockerignore(text: str) -> list[IgnoreRule]:
    """The rules of a .dockerignore, as Docker reads them: `#` lines are comments, blank lines
    are skipped, surrounding spaces trimmed, patterns cleaned (`./a/../b` is `b`, a leading `/`
    dropped)."""
    rules = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        exception = line.startswith("!")
        if exception:
            line = line[1:].strip()
        pattern = os.path.normpath(line).lstrip("/") if line else line
        if pattern == ".":
            pattern = ""
        rules.append(IgnoreRule(pattern, exception, _compile(pattern)))
    return rules


def excluded(rules: list[IgnoreRule], path: str) -> bool:
    """Whether Docker leaves `path` (relative, `/`-separated) out of the build context: a rule
    matches a path or any of its parent directories, and the last rule that matches decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    out = False
    for rule in rules:
        if out != rule.exception:
            continue  # this rule cannot change the answer
        if any(rule.regex.match(c) for c in candidates):
            out = not rule.exception
    return out


def may_reinclude_below(rules: list[IgnoreRule], directory: str) -> bool:
    """Whether some `!` rule might re-include a path under the excluded `directory` (then the
    walk must look inside it, as Docker does)."""
    for rule in rules:
        if not rule.exception:
            continue
        literal = re.split(r"[*?\[\\]", rule.pattern, maxsplit=1)[0]
        if literal.startswith(directory + "/") or (directory + "/").startswith(literal):
            return True
    return False


def context_files(root: Path, rules: list[IgnoreRule]) -> list[str]:
    """Every file and symlink of the build context (relative paths), as `docker build` sends it."""
    files = []
    for top, dirs, names in os.walk(root):
        rel_top = os.path.relpath(top, root)
        rel_top = "" if rel_top == "." else rel_top.replace(os.sep, "/")
        keep = []
        for d in sorted(dirs):
            rel = f"{rel_top}/{d}" if rel_top else d
            if (root / rel).is_symlink():
                names.append(d)
            elif not excluded(rules, rel) or may_reinclude_below(rules, rel):
                keep.append(d)
        dirs[:] = keep
        for n in sorted(names):
            rel = f"{rel_top}/{n}" if rel_top else n
            if not excluded(rules, rel):
                files.append(rel)
    return files


def matcher_self_test(f: Failures) -> None:
    """The matcher agrees with Docker on the cases .dockerignore files lean on."""
    rules = parse_dockerignore("# c\n**/target\n*.log\n/loadtest/*\n!loadtest/keep\nx/**\n!x/**/*.rs\n")
    cases = {
        "target": True, "a/b/target": True, "a/target/f": True, "targets": False,
        "x.log": True, "a/x.log": False,
        "loadtest/README.md": True, "loadtest/keep/src/main.rs": False, "loadtest": False,
        "x/a/b.txt": True, "x/a/b.rs": False, "# c": False,
    }
    for path, want in cases.items():
        f.check(excluded(rules, path) == want, f"dockerignore matcher: {path} excluded should be {want}")


# ------------------------------------------------------------------------------ the context

def copy_instructions(stage: list[dict]) -> list[tuple[list[str], str, str]]:
    """(sources, destination, working directory) of each COPY/ADD from the build context."""
    out = []
    workdir = "/"
    for ins in stage:
        if ins["instruction"] == "WORKDIR":
            workdir = os.path.normpath(os.path.join(workdir, ins["value"].strip()))
        if ins["instruction"] not in ("COPY", "ADD"):
            continue
        value = ins["value"].strip()
        words = json.loads(value) if value.startswith("[") else shlex.split(value)
        flags = [w for w in words if w.startswith("--")]
        if any(w.startswith("--from=") for w in flags):
            continue
        args = [w for w in words if not w.startswith("--")]
        out.append((args[:-1], args[-1], workdir))
    return out


def apply_copies(files: set[str], copies: list[tuple[list[str], str, str]], fs: Path) -> list[str]:
    """Copies the context's `files` into the image filesystem rooted at `fs` as the COPY
    instructions do (a directory source copies its contents), returning what was not found."""
    problems = []
    dirs = {"/".join(p.split("/")[:n]) for p in files for n in range(1, p.count("/") + 1)}
    for sources, dest, workdir in copies:
        target = os.path.normpath(os.path.join(workdir, dest))
        into_dir = dest.endswith("/") or dest in (".", "./") or len(sources) > 1
        for src in sources:
            src = os.path.normpath(src).lstrip("/")
            src = "" if src == "." else src
            matches = [p for p in files | dirs if fnmatch.fnmatchcase(p, src)] if src and re.search(r"[*?\[]", src) \
                else [src] if src == "" or src in dirs or src in files else []
            if not matches:
                problems.append(f"COPY source {src or '.'} is not in the build context")
            for m in matches:
                if m == "" or m in dirs:
                    for p in files:
                        if m == "" or p.startswith(m + "/"):
                            rel = p[len(m) + 1:] if m else p
                            place(ROOT / p, fs, os.path.join(target, rel))
                else:
                    where = os.path.join(target, os.path.basename(m)) if into_dir else target
                    place(ROOT / m, fs, where)
    return problems


def place(src: Path, fs: Path, image_path: str) -> None:
    dst = fs / image_path.lstrip("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    else:
        shutil.copy2(src, dst)


def cargo_metadata(cwd: Path, no_deps: bool) -> subprocess.CompletedProcess:
    args = ["cargo", "metadata", "--locked", "--offline", "--format-version", "1"] + (["--no-deps"] if no_deps else [])
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True)


def check_build_context(f: Failures, build: list[dict], ignore_text: str) -> None:
    rules = parse_dockerignore(ignore_text)
    files = set(context_files(ROOT, rules))
    for junk in ("target", "node_modules", "switchboard-data", ".git"):
        inside = sorted(p for p in files if junk in p.split("/")[:-1])
        f.check(not inside, f"the build context holds files under a {junk} directory, e.g. {inside[:3]}")
    copies = copy_instructions(build)
    if not f.check(bool(copies), "the build stage copies nothing from the build context"):
        return
    # Where the build runs: the working directory of the RUN that calls `cargo build`.
    cargo_dir, workdir = "", "/"
    for ins in build:
        if ins["instruction"] == "WORKDIR":
            workdir = os.path.normpath(os.path.join(workdir, ins["value"].strip()))
        elif ins["instruction"] == "RUN" and "cargo build" in ins["value"] and not cargo_dir:
            cargo_dir = workdir
    if not f.check(bool(cargo_dir), "no RUN of the build stage calls `cargo build`"):
        return
    with tempfile.TemporaryDirectory(prefix="switchboard-context-") as tmp:
        fs = Path(tmp)
        for problem in apply_copies(files, copies, fs):
            f.fail(problem)
        src = fs / cargo_dir.lstrip("/")

        # Every tracked file of the workspace members and of proto/ (the build scripts read it).
        members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
        tracked = subprocess.run(["git", "ls-files", "-z", "--", "Cargo.toml", "Cargo.lock", "proto", *members],
                                 cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
        missing = sorted(p for p in tracked if p and (ROOT / p).exists() and not (src / p).exists())
        f.check(not missing, f"the build context (after .dockerignore and COPY) lacks {len(missing)} files the "
                             f"workspace needs, e.g. {missing[:5]}")

        # cargo loads the workspace: every member, the lock file up to date (--locked). Resolving
        # the dependencies offline needs the registry index in ~/.cargo; where the repository
        # itself cannot be resolved offline, only the workspace is loaded (--no-deps).
        if shutil.which("cargo") is None:
            for m in members:
                f.check((src / m / "Cargo.toml").is_file(), f"workspace member {m} is not in the build context")
            print("  note: no cargo: checked only that every workspace member's Cargo.toml is in the context")
            return
        no_deps = cargo_metadata(ROOT, no_deps=False).returncode != 0
        if no_deps:
            print("  note: the registry index is not cached: `cargo metadata --no-deps` only")
        proc = cargo_metadata(src, no_deps)
        if not f.check(proc.returncode == 0, "cargo cannot load the workspace of the build context "
                                             f"(`cargo metadata --locked` in {cargo_dir}):\n{proc.stderr.strip()}"):
            return
        meta = json.loads(proc.stdout)
        names = {p["name"] for p in meta["packages"] if p["source"] is None}
        f.check("switchboard" in names, "the build context's workspace has no package `switchboard`")
        for p in meta["packages"]:
            for t in p["targets"] if p["source"] is None else []:
                f.check(Path(t["src_path"]).exists(), f"{p['name']}: target {t['name']} has no {t['src_path']}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dockerignore", type=Path, default=ROOT / ".dockerignore")
    opts = ap.parse_args()
    f = Failures("dockerfile")
    parser = DockerfileParser(path=str(DEPLOY / "Dockerfile"))
    instructions = parser.structure
    f.check(bool(instructions), "Dockerfile has no instructions")

    stages: list[list[dict]] = []
    for ins in instructions:
        if ins["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    if not f.check(len(stages) >= 2, "Dockerfile must be multi-stage (build, runtime)"):
        f.finish()
        return
    build, runtime = stages[0], stages[-1]

    build_from = build[0]["value"]
    f.check(build_from.startswith("rust:") and " AS build" in build_from.replace(" as ", " AS "),
            f"build stage must be a rust image named 'build': {build_from}")
    runs = " ".join(i["value"] for i in build if i["instruction"] == "RUN")
    f.check("cargo build --release --locked --bin switchboard" in runs,
            "build stage must run `cargo build --release --locked --bin switchboard`")

    base = runtime[0]["value"]
    f.check(base.startswith("gcr.io/distroless/cc") or base.startswith("debian:bookworm-slim"),
            f"runtime base must be distroless/cc or debian:bookworm-slim, not {base}")
    f.check(not any(i["instruction"] == "RUN" for i in runtime) or base.startswith("debian"),
            "the distroless runtime stage cannot RUN anything")
    copies = [i["value"] for i in runtime if i["instruction"] == "COPY"]
    f.check(any(c.endswith("/usr/local/bin/switchboard") and "--from=build" in c for c in copies),
            "runtime stage must copy the binary to /usr/local/bin/switchboard from the build stage")
    for c in copies:
        f.check("--from=build" in c, f"runtime stage copies something not built: COPY {c}")
        f.check(c.endswith("/usr/local/bin/switchboard") or c.endswith(" /data"),
                f"runtime stage must hold only the binary (and an empty /data): COPY {c}")

    def last(name: str) -> str | None:
        values = [i["value"] for i in runtime if i["instruction"] == name]
        return values[-1] if values else None

    user = last("USER") or ""
    f.check(user.split(":")[0] == "65532", f"runtime must run as uid 65532, not '{user}'")
    f.check(set((last("EXPOSE") or "").split()) == {"8080", "7000"}, "runtime must EXPOSE 8080 7000")
    try:
        entrypoint = json.loads(last("ENTRYPOINT") or "null")
        cmd = json.loads(last("CMD") or "null")
    except json.JSONDecodeError as e:
        f.fail(f"ENTRYPOINT/CMD must be JSON arrays: {e}")
        entrypoint = cmd = None
    f.check(entrypoint == ["/usr/local/bin/switchboard"], f"ENTRYPOINT is {entrypoint}")
    f.check(cmd == ["serve", "--listen", "0.0.0.0:8080", "--data-dir", "/data"], f"CMD is {cmd}")

    ignore_text = opts.dockerignore.read_text()
    ignore = ignore_text.split()
    for pattern in (".git", "target", "target-*", "node_modules", "switchboard-data"):
        f.check(pattern in ignore, f".dockerignore must exclude {pattern}")
    for needed in ("crates", "proto", "Cargo.toml", "Cargo.lock"):
        f.check(needed not in ignore, f".dockerignore must not exclude {needed} (the build needs it)")

    matcher_self_test(f)
    check_build_context(f, build, ignore_text)
    f.finish()


if __name__ == "__main__":
    main()
