"""Our batcher for TorchServe's frontend (serving/batcher.py, serving/java/) without a server: the agent
jar built by `make batcher`, checked against the TorchServe installed here, and run by a bare JVM.
Against a real server: tests/e2e/test_batcher.py."""
from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from serving import batcher
from serving.config import jvm_options, render

MODEL = "org/pytorch/serve/wlm/Model"


def java(*args: str) -> subprocess.CompletedProcess:
    path = shutil.which("java")
    if path is None:
        pytest.skip("java is not on the PATH")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def agent() -> Path:
    if not batcher.AGENT_JAR.is_file():
        pytest.fail(f"{batcher.AGENT_JAR} is missing: make batcher (make test builds it first)")
    return batcher.AGENT_JAR


def recorded(agent: Path) -> dict[str, str]:
    with zipfile.ZipFile(agent) as jar:
        lines = jar.read(batcher.REPLACED).decode().splitlines()
    return dict(line.split("=", 1) for line in lines if line)


def members(jar: Path, entry: str, tmp_path: Path) -> list[str]:
    """The fields and methods (javap -p) of one class file inside a jar."""
    javap = shutil.which("javap") or pytest.skip("the JDK's javap is not on the PATH")
    target = tmp_path / entry.replace("/", "_")
    with zipfile.ZipFile(jar) as archive:
        target.write_bytes(archive.read(entry))
    listing = subprocess.run([javap, "-p", str(target)], check=True, capture_output=True, text=True).stdout
    return sorted(line.strip() for line in listing.splitlines() if line.startswith("  "))


def test_the_agent_replaces_the_model_class_of_the_installed_torchserve(agent):
    found = recorded(agent)
    assert MODEL in found, found
    assert found == batcher.upstream_digests(batcher.frontend_jar(), sorted(found)), (
        "the agent was built against another TorchServe: make batcher")
    with zipfile.ZipFile(agent) as jar:
        names = set(jar.namelist())
        manifest = jar.read("META-INF/MANIFEST.MF").decode()
    assert {f"{batcher.REPLACEMENT_DIR}{name}.class" for name in found} <= names
    assert f"Premain-Class: {batcher.AGENT_CLASS}" in manifest


def test_the_replacement_has_the_fields_and_methods_of_the_class_it_replaces(agent, tmp_path):
    """Only a method's body changed: the rest of the frontend links against the same members."""
    ours = members(agent, f"{batcher.REPLACEMENT_DIR}{MODEL}.class", tmp_path)
    theirs = members(batcher.frontend_jar(), f"{MODEL}.class", tmp_path)
    assert ours == theirs and any("pollBatch" in member for member in ours)


def test_a_jvm_with_the_agent_loads_our_model_class(agent):
    run = java(f"-javaagent:{agent}", "-cp", f"{batcher.frontend_jar()}:{agent}", batcher.AGENT_CLASS)
    assert run.returncode == 0, run.stderr
    assert "tinyserve batcher: installed" in run.stderr
    assert set(run.stdout.split("replaced:", 1)[1].split()) == set(recorded(agent)), run.stdout


def test_a_jvm_without_the_agent_keeps_torchserves_class(agent):
    run = java("-cp", f"{batcher.frontend_jar()}:{agent}", batcher.AGENT_CLASS)
    assert run.returncode == 0 and run.stdout.split() == ["replaced:"], run.stdout + run.stderr


def test_the_agent_replaces_nothing_in_a_torchserve_it_was_not_built_for(agent, tmp_path):
    """A frontend whose Model class is not the one compiled against: the agent says so, TorchServe
    runs unchanged (here: the recorded digest is wrong)."""
    other = tmp_path / "other-torchserve.jar"
    with zipfile.ZipFile(agent) as source, zipfile.ZipFile(other, "w") as out:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == batcher.REPLACED:
                data = re.sub(rb"=[0-9a-f]{64}", b"=" + b"0" * 64, data)
            out.writestr(item, data)
    run = java(f"-javaagent:{other}", "-cp", f"{batcher.frontend_jar()}:{other}", batcher.AGENT_CLASS)
    assert run.returncode == 0, run.stderr
    assert "tinyserve batcher: NOT installed" in run.stderr and "make batcher" in run.stderr
    assert run.stdout.split() == ["replaced:"]


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


def test_the_build_refuses_a_frontend_our_model_java_was_not_written_for(tmp_path):
    """Checked before anything is compiled: here a jar whose Model classes differ by a byte."""
    other = tmp_path / "model-server.jar"
    with zipfile.ZipFile(batcher.frontend_jar()) as source, zipfile.ZipFile(other, "w") as out:
        for name in batcher.UPSTREAM:
            out.writestr(f"{name}.class", source.read(f"{name}.class") + b"\0")
    with pytest.raises(batcher.BatcherBuildError, match="not TorchServe 0.12.0's frontend.*port the change"):
        batcher.build(tmp_path / "agent.jar", frontend=other)
    assert not (tmp_path / "agent.jar").exists()
