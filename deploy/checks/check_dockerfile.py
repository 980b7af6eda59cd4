"""Checks of deploy/Dockerfile and .dockerignore that need no Docker engine (check.sh also runs
hadolint): the file parses (dockerfile-parse), the build stage runs the locked release build of
the binary, and the runtime stage is small, non-root, and holds the binary only."""

from __future__ import annotations

import json

from dockerfile_parse import DockerfileParser

from common import DEPLOY, ROOT, Failures


def main() -> None:
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

    ignore = (ROOT / ".dockerignore").read_text().split()
    for pattern in (".git", "target", "target-*", "node_modules", "switchboard-data"):
        f.check(pattern in ignore, f".dockerignore must exclude {pattern}")
    for needed in ("crates", "proto", "Cargo.toml", "Cargo.lock"):
        f.check(needed not in ignore, f".dockerignore must not exclude {needed} (the build needs it)")
    f.finish()


if __name__ == "__main__":
    main()
