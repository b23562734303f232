"""Our batcher for TorchServe's frontend (serving/batcher.py, serving/batcher_build.py, serving/java/) without
a server: the agent jar built by `make batcher`, the classes it makes of TorchServe's Model and
WorkerThread, and bare JVMs that load them, with and without the agent, and with classes that are not
TorchServe 0.12.0's. Against a real server: tests/e2e/test_batcher.py.

tests/unit/java/PollBatchProbe.java calls Model.pollBatch directly, as the JVM loaded it, on a queue
of jobs (no archive, no worker): what a batch takes, and how long it waits."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from serving import batcher, batcher_build, launcher
from serving.config import jvm_options, render
from serving.server import Server
from settings.ports import Ports

MODEL = "org/pytorch/serve/wlm/Model"
WORKER_THREAD = "org/pytorch/serve/wlm/WorkerThread"
REWRITTEN = {MODEL: ("pollBatch", "addJob", "addFirst"), WORKER_THREAD: ("run", "lambda$run$0")}  # methods changed
PROBE = Path(__file__).resolve().parent / "java" / "PollBatchProbe.java"
TIMED_POLL = "java/util/concurrent/LinkedBlockingDeque.poll:(JLjava/util/concurrent/TimeUnit;)Ljava/lang/Object;"


def jdk_tool(name: str) -> str:
    return shutil.which(name) or pytest.skip(f"the JDK's {name} is not on the PATH")


def java(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    """A JVM whose temp dir (where the agent writes its verdict) is `tmp`."""
    return subprocess.run([jdk_tool("java"), f"-Djava.io.tmpdir={tmp}", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def agent() -> Path:
    if not batcher.AGENT_JAR.is_file():
        pytest.fail(f"{batcher.AGENT_JAR} is missing: make batcher (make test builds it first)")
    return batcher.AGENT_JAR


@pytest.fixture(scope="module")
def frontend() -> Path:
    return batcher_build.frontend_jar()


@pytest.fixture(scope="module")
def probe(tmp_path_factory, frontend) -> Path:
    classes = tmp_path_factory.mktemp("probe")
    subprocess.run([jdk_tool("javac"), "-nowarn", "-cp", str(frontend), "-d", str(classes), str(PROBE)],
                   check=True, capture_output=True, text=True, timeout=120)
    return classes


def other_torchserve(directory: Path, frontend: Path, name: str) -> Path:
    """A jar with one class of the frontend that is not 0.12.0's byte for byte (its source file attribute
    renamed), to put first on the class path: it loads and runs like TorchServe's, but the agent must
    leave the frontend alone."""
    jar = directory / "other-torchserve.jar"
    source_file = name.rsplit("/", 1)[1].encode() + b".java"
    with zipfile.ZipFile(frontend) as source, zipfile.ZipFile(jar, "w") as out:
        original = source.read(f"{name}.class")
        assert original.count(source_file) == 1
        out.writestr(f"{name}.class", original.replace(source_file, b"X" * (len(source_file) - 5) + b".java"))
    return jar


def loaded(classpath: list[Path], tmp: Path, agent: Path | None, dump: Path | None = None) -> str:
    """The agent's verdict in a bare JVM that loads Model as the frontend does (BatcherAgent.main)."""
    options = [f"-javaagent:{agent}"] if agent else []
    run = java(*options, "-cp", ":".join(map(str, classpath)), batcher.AGENT_CLASS, *([str(dump)] if dump else []),
               tmp=tmp)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def poll_batch(classpath: list[Path], tmp: Path, agent: Path | None, *, batch_size: int, delay_ms: int, rounds: int,
               queued: int, locked: bool = False) -> dict[str, int]:
    """PollBatchProbe's figures: batches taken, how many held fewer jobs than were queued, the slowest (us);
    `locked`: another thread holds the model's lock meanwhile ({"blocked": 1} if pollBatch waited for it)."""
    options = [f"-javaagent:{agent}"] if agent else []
    run = java(*options, "-cp", ":".join(map(str, classpath)), "PollBatchProbe", str(batch_size), str(delay_ms),
               str(rounds), str(queued), *(["locked"] if locked else []), tmp=tmp)
    assert run.returncode == 0, run.stderr
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", run.stdout.splitlines()[-1])}


def turns(classpath: list[Path], tmp: Path, agent: Path | None, jobs: int) -> dict[str, int]:
    """PollBatchProbe's two workers and `jobs` jobs one at a time: how many each worker took."""
    options = [f"-javaagent:{agent}"] if agent else []
    run = java(*options, "-cp", ":".join(map(str, classpath)), "PollBatchProbe", "turns", str(jobs), tmp=tmp)
    assert run.returncode == 0, run.stderr
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", run.stdout.splitlines()[-1])}


def javap(class_file: Path, *options: str) -> str:
    return subprocess.run([jdk_tool("javap"), *options, str(class_file)], check=True, capture_output=True,
                          text=True, timeout=60).stdout


ONE_JOB = "(org.pytorch.serve.job.Job)"  # addJob and addFirst also exist with other parameters, left alone


def signature(method: str) -> str:
    """How javap -c -p starts the method's code: its name and, for addJob and addFirst, the one-job overload."""
    return re.escape(method) + (re.escape(ONE_JOB) if method in ("addJob", "addFirst") else r"\(")


def without(listing: str, methods: tuple[str, ...]) -> str:
    """javap -c -p less the code of `methods` (which the agent changes) and the file name line."""
    for method in methods:
        listing = re.sub(rf"\n  [^\n]* {signature(method)}.*?\n\n", "\n", listing, flags=re.S)
    return "\n".join(line for line in listing.splitlines() if not line.startswith("Classfile"))


def code(listing: str, method: str) -> str:
    """One method's code in a javap -c -p listing."""
    return re.search(rf"\n  [^\n]* {signature(method)}.*?\n\n", listing, flags=re.S).group(0)


@pytest.fixture(scope="module")
def classes(tmp_path_factory, agent, frontend) -> dict[str, tuple[Path, Path]]:
    """Each rewritten class as TorchServe's jar has it, and as a JVM with our agent got it."""
    tmp = tmp_path_factory.mktemp("classes")
    (tmp / "theirs").mkdir()
    (tmp / "ours").mkdir()
    assert loaded([frontend, agent], tmp, agent, dump=tmp / "ours").startswith("installed ")
    found = {}
    with zipfile.ZipFile(frontend) as jar:
        for name in REWRITTEN:
            simple = name.rsplit("/", 1)[1]
            (tmp / "theirs" / f"{simple}.class").write_bytes(jar.read(f"{name}.class"))
            found[name] = (tmp / "theirs" / f"{simple}.class", tmp / "ours" / f"{simple}.class")
    return found


def test_the_agent_jar_carries_the_agent_asm_and_the_digest_it_checks(agent):
    with zipfile.ZipFile(agent) as jar:
        names = set(jar.namelist())
        manifest = jar.read("META-INF/MANIFEST.MF").decode()
        upstream = dict(line.split("=", 1) for line in jar.read(batcher_build.UPSTREAM_FILE).decode().splitlines())
    assert f"Premain-Class: {batcher.AGENT_CLASS}" in manifest
    assert {"tinyserve/batcher/BatcherAgent.class", "tinyserve/batcher/ModelRewrite.class",
            "tinyserve/batcher/QueuedJobs.class", "tinyserve/batcher/WorkerThreadRewrite.class",
            "tinyserve/batcher/BackendWrites.class"} <= names
    # ASM travels inside the agent (the frontend's JVM has nothing else), with its copyright notice
    assert {"org/objectweb/asm/ClassReader.class", "org/objectweb/asm/ClassWriter.class",
            "META-INF/asm/copyright"} <= names
    assert not any(name.startswith("org/pytorch/") for name in names), "the agent carries no TorchServe class"
    assert upstream == {"torchserve": "0.12.0",
                        **{f"sha256.{name}": digest for name, digest in batcher_build.UPSTREAM.classes.items()}}
    assert set(batcher_build.UPSTREAM.classes) == set(REWRITTEN)


def test_the_recorded_digests_are_the_installed_torchserves(frontend):
    for name, digest in batcher_build.UPSTREAM.classes.items():
        assert batcher_build.class_digest(frontend, name) == digest, (
            f"the installed TorchServe's {name} is not the one the agent rewrites: serving/java/README.md, Upgrading")


@pytest.mark.parametrize("name", REWRITTEN)
def test_a_rewritten_class_has_the_same_fields_and_methods(classes, name):
    """Only some methods' code changes: the rest of the frontend links against the same members."""
    members = [sorted(line.strip() for line in javap(c, "-p").splitlines() if line.startswith("  "))
               for c in classes[name]]
    assert members[0] == members[1] and all(any(f" {m}(" in x for x in members[0]) for m in REWRITTEN[name])


@pytest.mark.parametrize("name", REWRITTEN)
def test_every_other_method_is_byte_for_byte_theirs(classes, name):
    theirs, ours = (javap(c, "-c", "-p") for c in classes[name])
    assert without(theirs, REWRITTEN[name]) == without(ours, REWRITTEN[name])
    assert all(code(theirs, m) != code(ours, m) for m in REWRITTEN[name])


def test_the_rewritten_pollbatch_takes_no_lock_and_no_longer_waits_for_the_batch(classes):
    """TorchServe's pollBatch takes the model's lock, then has three timed polls: the worker's own queue
    (waitTime), the first job (waits until one comes), and the batch's (up to maxBatchDelay). Ours takes no
    lock, keeps the first, waits for the first job in QueuedJobs.firstJob (the last idle worker first),
    takes what is queued instead of the third, and has no deadline."""
    theirs, ours = (code(javap(c, "-c", "-p"), "pollBatch") for c in classes[MODEL])
    assert theirs.count(TIMED_POLL) == 3 and ours.count(TIMED_POLL) == 1
    assert "ReentrantLock.lockInterruptibly" in theirs and "ReentrantLock.lockInterruptibly" not in ours
    assert "LinkedBlockingDeque.addFirst" in theirs and "LinkedBlockingDeque.addFirst" not in ours
    assert "QueuedJobs" not in theirs
    for call in ("noLock", "firstJob", "poll", "noDeadline", "addFirst"):
        assert ours.count(f"tinyserve/batcher/QueuedJobs.{call}:") == 1, call


@pytest.mark.parametrize("method, call", [("addJob", "offer"), ("addFirst", "addFirst")])
def test_a_job_put_in_the_queue_also_wakes_the_last_idle_worker(classes, method, call):
    theirs, ours = (code(javap(c, "-c", "-p"), method) for c in classes[MODEL])
    assert f"LinkedBlockingDeque.{call}:" in theirs and f"LinkedBlockingDeque.{call}:" not in ours
    assert f"tinyserve/batcher/QueuedJobs.{call}:" in ours


def test_the_rewritten_worker_thread_writes_a_batch_itself_and_does_not_wait_for_the_write(classes):
    """TorchServe's run() hands each batch to the common pool (runAsync), whose thread waits for the write
    (sync); ours queues the write from the worker thread and goes on. connect() keeps its own sync."""
    theirs, ours = (javap(c, "-c", "-p") for c in classes[WORKER_THREAD])
    assert "CompletableFuture.runAsync" in code(theirs, "run") and "CompletableFuture.runAsync" not in code(ours, "run")
    assert "tinyserve/batcher/BackendWrites.runHere:" in code(ours, "run")
    lambda_theirs, lambda_ours = code(theirs, "lambda$run$0"), code(ours, "lambda$run$0")
    assert "ChannelFuture.sync" in lambda_theirs and "ChannelFuture.sync" not in lambda_ours
    assert "tinyserve/batcher/BackendWrites.noWait:" in lambda_ours
    assert "ChannelFuture.sync" in code(ours, "connect")


def test_a_jvm_without_the_agent_keeps_torchserves_class(agent, frontend, tmp_path):
    assert loaded([frontend, agent], tmp_path, None) == "absent the agent did not run in this JVM"
    assert not (tmp_path / batcher.STATUS_FILE).exists()


def test_the_agents_verdict_is_written_where_the_launcher_reads_it(agent, frontend, tmp_path):
    printed = loaded([frontend, agent], tmp_path, agent)
    assert printed.startswith("installed TorchServe 0.12.0's Model and WorkerThread rewritten")
    found = batcher.verdict(tmp_path)
    assert found.ours and f"{found.state} {found.why}" == printed


def test_pollbatch_with_the_agent_takes_the_queued_jobs_and_never_waits(agent, frontend, probe, tmp_path):
    """maxBatchDelay 5,000 ms: a lone job goes at once. 15 jobs queued: every batch takes them all, even
    with maxBatchDelay 1 ms (TorchServe's countdown would end a batch when the clock ticks meanwhile)."""
    classpath = [frontend, agent, probe]
    lone = poll_batch(classpath, tmp_path, agent, batch_size=16, delay_ms=5000, rounds=20, queued=1)
    assert lone["short"] == 0 and lone["slowest_us"] < 500_000, lone
    full = poll_batch(classpath, tmp_path, agent, batch_size=16, delay_ms=1, rounds=20_000, queued=15)
    assert full == {**full, "batches": 20_000, "short": 0}, full
    over = poll_batch(classpath, tmp_path, agent, batch_size=4, delay_ms=1, rounds=100, queued=10)
    assert over["short"] == 0, over  # batchSize still caps the batch


def test_pollbatch_with_the_agent_does_not_wait_for_the_models_lock(agent, frontend, probe, tmp_path):
    """Another thread holds the model's lock: ours takes its jobs all the same, TorchServe's waits."""
    classpath = [frontend, agent, probe]
    ours = poll_batch(classpath, tmp_path, agent, batch_size=16, delay_ms=1, rounds=10, queued=3, locked=True)
    assert ours.get("blocked") is None and ours["short"] == 0, ours
    theirs = poll_batch(classpath, tmp_path, None, batch_size=16, delay_ms=1, rounds=10, queued=3, locked=True)
    assert theirs == {"blocked": 1}, theirs


def test_one_request_at_a_time_goes_to_the_same_worker(agent, frontend, probe, tmp_path):
    """Two workers wait in pollBatch and jobs come one at a time through Model.addJob: ours hands each job
    to the worker that went idle last (the one whose caches are warm), TorchServe's takes turns."""
    classpath = [frontend, agent, probe]
    ours = turns(classpath, tmp_path, agent, jobs=200)
    # the probe sends each job once both workers wait, and a worker's recheck leaves a job to the worker
    # woken for it, so even on a busy machine (6 busy processes on 2 cores: 200/0 eight times of eight)
    assert sorted(ours.values()) == [0, 200], ours
    theirs = turns(classpath, tmp_path, None, jobs=200)
    # upstream's turns: 100/100 give or take a few when idle, 79/121 at worst when busy
    assert sum(theirs.values()) == 200 and min(theirs.values()) >= 40, theirs


def test_pollbatch_without_the_agent_waits_for_the_batch_to_fill(agent, frontend, probe, tmp_path):
    """The probe does see TorchServe's own batcher: a lone job waits the whole maxBatchDelay."""
    lone = poll_batch([frontend, agent, probe], tmp_path, None, batch_size=16, delay_ms=300, rounds=2, queued=1)
    assert lone["slowest_us"] >= 290_000, lone


@pytest.mark.parametrize("name", REWRITTEN)
def test_a_torchserve_the_agent_was_not_written_for_is_refused_and_keeps_its_batcher(
        agent, frontend, probe, tmp_path, name):
    """One class differs: the agent changes nothing (not even the class that matches), and says so."""
    classpath = [other_torchserve(tmp_path, frontend, name), frontend, agent, probe]
    printed = loaded(classpath, tmp_path, agent, dump=tmp_path)
    assert printed.startswith(f"refused {name} on the frontend's class path is not TorchServe 0.12.0's"), printed
    assert "make batcher" in printed and batcher_build.UPSTREAM.classes[name] in printed
    assert not list(tmp_path.glob("*.class")), "a refusing agent rewrites nothing"
    found = batcher.verdict(tmp_path)
    assert found.state == "refused" and not found.ours
    lone = poll_batch(classpath, tmp_path, agent, batch_size=16, delay_ms=300, rounds=2, queued=1)
    assert lone["slowest_us"] >= 290_000, f"the refused class still waits, as TorchServe's does: {lone}"
    run = java(f"-javaagent:{agent}", "-cp", ":".join(map(str, classpath)), batcher.AGENT_CLASS, tmp=tmp_path)
    assert "tinyserve batcher: NOT installed, refused" in run.stderr, run.stderr


def test_a_refused_agent_is_loud_in_make_serve_and_make_status(agent, frontend, tmp_path, capsys):
    """The verdict a refusing agent writes reaches the launcher's banner (make serve, make status)."""
    run_dir = tmp_path / "run"
    (run_dir / "tmp").mkdir(parents=True)
    (run_dir / "config.properties").write_text(f"vmargs=-Xmx1g {batcher.vm_option(agent)}\n")
    loaded([other_torchserve(tmp_path, frontend, MODEL), frontend, agent], run_dir / "tmp", agent)
    server = Server(run_dir, Ports())
    assert server.batcher().state == "refused"
    launcher.warn_about_batcher(server)
    banner = capsys.readouterr().err
    assert "WARNING: this TorchServe does not run our batcher (refused)" in banner
    assert "is not TorchServe 0.12.0's" in banner and "make batcher" in banner
    assert "TorchServe's own" in server.batcher().describe()


def test_our_batcher_is_quiet_and_a_server_without_the_agent_says_so(agent, frontend, tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "tmp").mkdir(parents=True)
    (run_dir / "config.properties").write_text(f"vmargs={batcher.vm_option(agent)}\n")
    loaded([frontend, agent], run_dir / "tmp", agent)
    server = Server(run_dir, Ports())
    assert server.batcher().ours and server.batcher().describe().startswith("ours")
    launcher.warn_about_batcher(server)
    assert capsys.readouterr().err == ""
    (run_dir / "config.properties").write_text("vmargs=-Xmx1g\n")  # make bench-tune's +upstream variants
    assert server.batcher().state == "absent" and "without our agent" in server.batcher().why


def test_a_verdict_file_is_read_as_state_and_reason(tmp_path):
    assert batcher.verdict(tmp_path).state == "absent"
    (tmp_path / batcher.STATUS_FILE).write_text("failed the rewrite of X failed (boom)\n")
    assert batcher.verdict(tmp_path) == batcher.Verdict("failed", "the rewrite of X failed (boom)")


@pytest.mark.parametrize("profile", ["local", "production"])
def test_both_profiles_start_java_with_the_agent(profile, tmp_path):
    assert batcher.vm_option() in jvm_options(profile, cpus=2)
    assert "-javaagent" not in jvm_options(profile, cpus=2, batcher=False)
    vmargs = [line for line in render(profile, tmp_path).splitlines() if line.startswith("vmargs=")]
    assert len(vmargs) == 1 and f"-javaagent:{batcher.AGENT_JAR}" in vmargs[0]


def test_a_missing_agent_jar_is_a_launch_error_that_says_how_to_build_it(tmp_path, monkeypatch):
    missing = tmp_path / "tinyserve-batcher.jar"
    with pytest.raises(batcher.BatcherBuildError, match="Java agent .*tinyserve-batcher.jar is missing$"):
        batcher.require_agents(f"vmargs=-Xmx1g -javaagent:{missing}\n")
    monkeypatch.setattr("serving.batcher.AGENT_JAR", missing)  # ours: the message says how to build it
    with pytest.raises(batcher.BatcherBuildError, match="is missing .*make batcher"):
        batcher.require_agents(f"vmargs=-javaagent:{missing}=verbose -Xmx1g\n")
    batcher.require_agents("vmargs=-Xmx1g\n")  # no agent, nothing to check


@pytest.mark.parametrize("name", REWRITTEN)
def test_the_build_refuses_a_frontend_the_rewrites_were_not_written_for(tmp_path, frontend, name):
    """Checked before anything is compiled: here a jar where one of the classes differs by a byte."""
    other = tmp_path / "model-server.jar"
    with zipfile.ZipFile(frontend) as source, zipfile.ZipFile(other, "w") as out:
        for each in REWRITTEN:
            out.writestr(f"{each}.class", source.read(f"{each}.class") + (b"\0" if each == name else b""))
    with pytest.raises(batcher.BatcherBuildError, match=f"not TorchServe 0.12.0's frontend.*{name}.*port the rewrites"):
        batcher_build.build(tmp_path / "agent.jar", frontend=other)
    assert not (tmp_path / "agent.jar").exists()


def test_the_runtime_never_imports_the_build_code():
    """serving/batcher_build.py is `make batcher`'s: what the server, the launcher, the config renderer and
    the container's health check import leaves it out."""
    code = ("import importlib.util, sys\n"
            "import serving.config, serving.launcher, serving.server\n"
            "spec = importlib.util.spec_from_file_location('healthcheck', 'docker/healthcheck.py')\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "print(sorted(m for m in sys.modules if m.startswith('serving')))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr
    assert "serving.batcher" in run.stdout and "serving.batcher_build" not in run.stdout, run.stdout
