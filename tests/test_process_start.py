"""Start-up without the garbage collector: paused only in the ``vecpg`` command's own
process and only while it builds, then back on with start-up's objects frozen. Each case
runs in a fresh interpreter, since freezing would keep this test process's garbage."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fresh_python import run_python

BLOCK_SNIPPET = """
import gc, json
from vecpg.commands import process_start

def probe(own, collector_on, fail):
    if own:
        process_start.own_process()
    if not collector_on:
        gc.disable()
    before = gc.get_freeze_count()
    inside = None
    try:
        with process_start.start_up():
            inside = gc.isenabled()
            made = [[i] for i in range(1000)]  # tracked containers, alive after the block
            if fail:
                raise RuntimeError("start-up failed")
    except RuntimeError:
        pass
    after = {"inside": inside, "after": gc.isenabled(),
             "frozen": gc.get_freeze_count() - before}
    gc.unfreeze()
    gc.enable()
    return after

print(json.dumps(probe(OWN, COLLECTOR_ON, FAIL)))
"""


def block(own: bool, collector_on: bool = True, fail: bool = False) -> dict:
    code = (
        BLOCK_SNIPPET.replace("OWN", str(own))
        .replace("COLLECTOR_ON", str(collector_on))
        .replace("FAIL", str(fail))
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_commands_own_process_builds_without_collector_then_freezes_and_resumes():
    seen = block(own=True)
    assert seen["inside"] is False
    assert seen["after"] is True
    assert seen["frozen"] >= 1000  # the lists made inside now skip every later collection


def test_a_failed_start_up_still_turns_the_collector_back_on():
    seen = block(own=True, fail=True)
    assert seen["inside"] is False
    assert seen["after"] is True


def test_a_program_calling_main_keeps_its_collector_as_it_is():
    seen = block(own=False)
    assert seen == {"inside": True, "after": True, "frozen": 0}


def test_a_collector_the_caller_turned_off_stays_off_and_nothing_is_frozen():
    seen = block(own=True, collector_on=False)
    assert seen == {"inside": False, "after": False, "frozen": 0}


CONSOLE_SNIPPET = """
import gc, json, sys
from vecpg.run.trainer import Trainer

seen = {}
build, train = Trainer.__init__, Trainer.train

def spy_build(self, *args, **kwargs):
    seen["building"] = gc.isenabled()
    build(self, *args, **kwargs)

def spy_train(self):
    seen["training"] = gc.isenabled()
    seen["frozen"] = gc.get_freeze_count()
    print(json.dumps(seen), flush=True)
    return train(self)

Trainer.__init__, Trainer.train = spy_build, spy_train
from vecpg.commands.cli import console_main
sys.argv = ["vecpg", "train", "--env", "CartPole-v1", "--total-steps", "128", "--num-envs",
            "2", "--num-steps", "64", "--vector", "sync", "--quiet", "--no-tensorboard",
            "--run-dir", RUN_DIR]
console_main()
"""


def test_vecpg_train_builds_without_collector_and_trains_with_it(tmp_path: Path):
    result = run_python(CONSOLE_SNIPPET.replace("RUN_DIR", repr(str(tmp_path / "run"))))
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[0])
    assert seen["building"] is False
    assert seen["training"] is True
    assert seen["frozen"] > 10_000  # torch's modules, functions and classes
