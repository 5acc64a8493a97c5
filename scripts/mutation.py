#!/usr/bin/env python3
"""Mutation testing of the modules a robot depends on, one module at a time (docs/mutation.md).

For each module this builds a private copy of the repository under --work, writes a mutmut
configuration there that mutates that one module and runs only the fast, DDS-free test files that
cover it, runs `mutmut run`, and prints killed / survived / timeout and the score.

Never run by CI (no test calls it): all six modules take 8 to 16 minutes on two shared cores.
Needs mutmut 3 in the environment: `.venv/bin/pip install mutmut==3.8.1`.

    .venv/bin/python scripts/mutation.py                 # every module
    .venv/bin/python scripts/mutation.py sync metrics    # some of them
    .venv/bin/python scripts/mutation.py thermal --show  # and print the diff of every survivor

mutmut rewrites the files it mutates, so it only ever runs in the copy; the copy's own sage_ros is
the one imported (PYTHONPATH points at the copy and mutmut puts its mutants/ folder first; the
editable install's finder comes after both on the import path). This is checked before each run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What a copy needs besides the package: the tests and the files some tests read (config, docs).
COPIED = ("sage_ros", "test", "config", "docs", "launch", "resource", "package.xml", "setup.py", "setup.cfg")


@dataclass(frozen=True)
class Module:
    path: str  # the file mutated, relative to the repository
    tests: tuple[str, ...]  # pytest arguments selecting the fast tests that cover it
    # Survivors shown to be equivalent (no input can tell them apart from the original), by mutant
    # name, each with a fragment its diff must contain (so a renumbered mutant is not excluded by
    # mistake) and the reason. docs/mutation.md lists them too.
    equivalent: dict[str, tuple[str, str]] = field(default_factory=dict)


# test_fuzz_images: its DDS test starts the node, and its hypothesis property test needs ~10^4
# examples (minutes) to reach every outcome; with a few hundred it misses some and fails the clean run.
NOT_SLOW = "not over_dds and not fuzzed_image_fields"

# Reasons shared by several equivalent mutants (docs/mutation.md explains each).
NEG_RESHAPE = "numpy infers any negative size: reshape(-2) is reshape(-1)"
COPY_FLAG = "astype's copy flag only decides whether a temporary is made; the values are the same"
CV_DEFAULT = "None or an omitted argument is OpenCV's default, which is the value given"
YUV_RANGE = "for 8-bit BGR every Y, U, V lies in [16, 240] (linear, extremes at the cube's corners): never clipped"
F32_STORE = "float32 values stored in a float64 array keep their value: same rounding"
NAN_CASE = 'float("NAN") is float("nan")'


def _eq(prefix: str, rows: list[tuple[str, str, str]]) -> dict[str, tuple[str, str]]:
    return {prefix + name: (fragment, reason) for name, fragment, reason in rows}


INT_DIV = "numpy's / on integer counts is true division: the same floats"
NO_WRITE = "no metric writes into an input array, so whether _grey copies it does not matter"
METRICS_EQUIVALENT = _eq("sage_ros.evaluation.metrics.x", [
    ("__grey__mutmut_9", "astype(None, copy=False)", "astype(None) is float64"),
    ("__grey__mutmut_10", "copy=None", NO_WRITE),
    ("__grey__mutmut_12", "astype(np.float64, )", NO_WRITE),
    ("__grey__mutmut_13", "copy=True", NO_WRITE),
    ("__levels__mutmut_10", "dtype=None", "_levels only ever gets _grey's float64 array"),
    ("__levels__mutmut_12", "asarray(image, )", "_levels only ever gets _grey's float64 array"),
    ("__entropy_of_counts__mutmut_2", "astype(None)", "astype(None) is float64"),
    ("_entropy__mutmut_13", "levels.ravel(), )", "empty histogram bins are dropped before the entropy"),
    ("_entropy__mutmut_14", "minlength=257", "empty histogram bins are dropped before the entropy"),
    ("_spatial_frequency__mutmut_16", "np.diff(f, )", "np.diff's default axis -1 is axis 1 of a 2-D image"),
    ("__gaussian_window__mutmut_4", "dtype=None", "subtracting (size - 1) / 2.0 makes the taps float64 anyway"),
    ("__gaussian_window__mutmut_6", "arange(size, )", "subtracting (size - 1) / 2.0 makes the taps float64 anyway"),
    ("__filter_valid__mutmut_9", "borderType=None",
     "the border mode only changes the r-pixel margin that the 'valid' crop removes"),
    ("__filter_valid__mutmut_14", "kernel_1d, )",
     "the border mode only changes the r-pixel margin that the 'valid' crop removes"),
    ("__vif_reference__mutmut_27", "min(ref.shape) <= n",
     "dead check: the previous scale kept >= its own n, larger than this scale's n"),
    ("__vif_reference__mutmut_28", "return", "dead check: the previous scale kept >= its own n, larger than this n"),
    ("__vif_against__mutmut_47", "g[sc.flat] = 1.0", "a flat reference has variance 0 there: g is multiplied by 0"),
    ("__vif_against__mutmut_54", "sv[flat_dist] = 1.0", "g is 0 there, so the term is log10(1) whatever sv is"),
    ("__vif_against__mutmut_56", "g <= 0", "for g == 0 the term is log10(1) whatever sv is, and g stays 0"),
    ("__edge_preservation__mutmut_16", "g_src >= g_f", "equal strengths give the ratio 1 either way"),
    ("__edge_preservation__mutmut_26", "(g_src == 0) & (g_f == 0)",
     "with exactly one strength 0 the ratio min/max is already 0; only 0/0 needs the override"),
    ("_ssim_pair__mutmut_24", "use_sample_covariance=None", "None is falsy like False"),
    ("_ssim_pair__mutmut_29", "sigma=1.5", "1.5 is scikit-image's default sigma"),
    ("ǁFusionScorerǁscore__mutmut_11", "_same_shape(f)",
     "MI, computed next, raises the same 'images differ in size' error"),
    ("ǁFusionScorerǁscore__mutmut_12", "_same_shape(self.a, )",
     "MI, computed next, raises the same 'images differ in size' error"),
    ("_confusion_matrix__mutmut_3", "copy=None", COPY_FLAG),
    ("_confusion_matrix__mutmut_5", "astype(np.int64, )", COPY_FLAG),
    ("_confusion_matrix__mutmut_7", "copy=True", COPY_FLAG),
    ("_confusion_matrix__mutmut_10", "copy=None", COPY_FLAG),
    ("_confusion_matrix__mutmut_12", "astype(np.int64, )", COPY_FLAG),
    ("_confusion_matrix__mutmut_14", "copy=True", COPY_FLAG),
    ("_segmentation_score__mutmut_3", "dtype=None", INT_DIV),
    ("_segmentation_score__mutmut_5", "asarray(confusion, )", INT_DIV),
])


MODULES: dict[str, Module] = {
    "sync": Module(
        "sage_ros/pairing/sync.py",
        (
            "test/test_sync.py",
            "test/test_sync_negative_stamps.py",
            "test/test_mutation_sync.py",
            "-k",
            "not node_drops",  # that one starts the node over DDS
        ),
        _eq("sage_ros.pairing.sync.xǁApproximateTimeSyncǁ", [
            ("_empty_stats__mutmut_13", "[0] * n, )", "SyncStats.pairs defaults to 0: dropping the 0 changes nothing"),
            ("_match__mutmut_12", "abs(s - stamp) < self.slop_ns",
             "a partner exactly slop away spreads the set by >= slop, which the strict spread test then refuses"),
        ]),
    ),
    "encodings": Module(
        "sage_ros/image/encodings.py",
        (
            "test/test_encodings.py",
            "test/test_fuzz_images.py",
            "test/test_cv_bridge_safety.py",
            "test/test_mutation_encodings.py",
            "-k",
            NOT_SLOW,
        ),
        _eq("sage_ros.image.encodings.x", [
            ("__as_bytes_array__mutmut_5", "reshape(-2).view", NEG_RESHAPE),
            ("__as_bytes_array__mutmut_16", "reshape(-2)", NEG_RESHAPE),
            ("_encode_image__mutmut_44", "reshape(height, -2)", NEG_RESHAPE),
            ("_decode_image__mutmut_23", "buf.size > step * height",
             "with exactly step*height bytes both branches read the same bytes"),
            ("_decode_image__mutmut_48", "or True", "one-byte samples have no byte order: newbyteorder is a no-op"),
            ("_decode_image__mutmut_50", "itemsize >= 1",
             "one-byte samples have no byte order: newbyteorder is a no-op"),
            ("_decode_image__mutmut_56", 'newbyteorder("="), )', "copy=True is astype's default"),
            ("_encode_image__mutmut_39", "copy=None", COPY_FLAG),
            ("_encode_image__mutmut_41", "astype(sample, )", COPY_FLAG),
            ("_encode_image__mutmut_42", "copy=True", COPY_FLAG),
            ("_bgr8_to_yuv422__mutmut_67", "(h, w, 2), None)", F32_STORE),
            ("_bgr8_to_yuv422__mutmut_69", "(h, w, 2), )", F32_STORE),
            ("_bgr8_to_yuv422__mutmut_99", "None, 255)", YUV_RANGE),
            ("_bgr8_to_yuv422__mutmut_100", "0, None)", YUV_RANGE),
            ("_bgr8_to_yuv422__mutmut_105", "1, 255)", YUV_RANGE),
            ("_bgr8_to_yuv422__mutmut_106", "0, 256)", YUV_RANGE),
        ]),
    ),
    "thermal": Module(
        "sage_ros/image/thermal.py",
        ("test/test_thermal.py", "test/test_fuzz_images.py", "test/test_mutation_thermal.py", "-k", NOT_SLOW),
        _eq("sage_ros.image.thermal.xǁThermalNormalizerǁ", [
            ("__init____mutmut_4", '= ""', '_kind "" only makes the first frame call reset(), which finds nothing'),
            ("reset__mutmut_2", '= ""', '_kind "" makes the next frame call reset() again: nothing left to forget'),
            ("normalize__mutmut_45", "span <= self.config.min_span",
             "at span == min_span the widened window is the same window (mid -+ span/2)"),
            ("normalize__mutmut_68", "None, 1.0)", "the float64 fallback is clipped to [0, 1] again just after"),
            ("normalize__mutmut_75", "astype(None)", "astype(None) is float64"),
            ("normalize__mutmut_79", "0.0, 2.0)",
             "the float64 fallback is clipped to [0, 1] again just after (2 casts to float32 fine)"),
        ]),
    ),
    "registration": Module(
        "sage_ros/image/registration.py",
        ("test/test_node_units.py", "test/test_mutation_registration.py"),
        _eq("sage_ros.image.registration.x", [
            ("_parse_homography__mutmut_3", "reshape(None)",
             "only the size is used before the reshape to 3x3, whatever the input's shape"),
            ("_parse_homography__mutmut_9", "reshape(-2)", NEG_RESHAPE),
            ("ǁRegistrationǁto_rgb_grid__mutmut_13", "flags=None", CV_DEFAULT),
            ("ǁRegistrationǁto_rgb_grid__mutmut_14", "borderMode=None", CV_DEFAULT),
            ("ǁRegistrationǁto_rgb_grid__mutmut_18", "(rw, rh), borderMode", CV_DEFAULT),
            ("ǁRegistrationǁto_rgb_grid__mutmut_19", "INTER_LINEAR, )", CV_DEFAULT),
        ]),
    ),
    "metrics": Module(
        "sage_ros/evaluation/metrics.py",
        ("test/test_metrics.py", "test/test_mutation_metrics.py"),
        METRICS_EQUIVALENT,
    ),
    "stats": Module(
        "sage_ros/node/stats.py",
        ("test/test_node_units.py", "test/test_mutation_stats.py"),
        _eq("sage_ros.node.stats.x", [
            ("_percentiles_ms__mutmut_6", '"NAN"', NAN_CASE),
            ("_percentiles_ms__mutmut_11", '"NAN"', NAN_CASE),
            ("_percentiles_ms__mutmut_16", '"NAN"', NAN_CASE),
            ("_percentiles_ms__mutmut_19", "dtype=None", "np.percentile works in float64 and float() converts the max"),
            ("_percentiles_ms__mutmut_21", "asarray(samples, )",
             "np.percentile works in float64 and float() converts the max"),
            ("ǁNodeStatsǁ__init____mutmut_17", '= ""', "model_error is read only after model_failed() has set it"),
            ("ǁNodeStatsǁ__init____mutmut_19", '= ""', 'last_error is only tested for truth: "" is falsy like None'),
        ]),
    ),
}

# mutmut's exit-code statuses, grouped: a mutant is detected when its tests fail, crash or hang.
DETECTED = ("killed", "timeout", "segfault")


def _toml_list(items: list[str] | tuple[str, ...]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _existing_tests(args: tuple[str, ...], root: Path) -> list[str]:
    """Drop test files absent from this checkout (a module's new test file may not exist yet)."""
    return [a for a in args if not a.endswith(".py") or (root / a).is_file()]


def make_copy(dest: Path, module: Module, snapshot: str, overlay: bool) -> None:
    """A private copy of the repository in `dest`.

    `worktree`: the working tree as it is on disk now. A git revision (e.g. HEAD): that commit, and
    with `overlay` the working tree's module under test and the test files the commit lacks (the new
    tests), so a before/after comparison differs only in those files.
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "mutants", ".hypothesis")
    if snapshot == "worktree":
        for name in COPIED:
            src = REPO / name
            if src.is_dir():
                shutil.copytree(src, dest / name, ignore=ignore)
            elif src.is_file():
                shutil.copy2(src, dest / name)
        return
    # Engineers editing the working tree can leave it unimportable for a while; a commit is a
    # consistent alternative.
    with tempfile.TemporaryFile() as tar:
        subprocess.run(["git", "-C", str(REPO), "archive", snapshot, *COPIED], stdout=tar, check=True)
        tar.seek(0)
        with tarfile.open(fileobj=tar) as archive:
            archive.extractall(dest, filter="data")
    if not overlay:
        return
    new_tests = [a for a in module.tests if a.endswith(".py") and not (dest / a).exists()]
    for rel in (module.path, *new_tests):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)


def write_config(dest: Path, module: Module, max_seconds_factor: float) -> None:
    tests = _existing_tests(module.tests, dest)
    # --hypothesis-seed: any hypothesis test draws the same examples in every mutant (a kill is never luck).
    cli = ["-p", "no:cacheprovider", "--hypothesis-seed=0"]
    (dest / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        'source_paths = ["sage_ros"]\n'
        f"only_mutate = {_toml_list([module.path])}\n"
        'also_copy = ["config", "docs", "launch", "resource", "package.xml"]\n'
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}\n"
        f"pytest_add_cli_args = {_toml_list(cli)}\n"
        f"timeout_multiplier = {max_seconds_factor}\n"
        "use_git_change_detection = false\n"
    )


def child_env(dest: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(dest)
    # One thread per library: the machine's cores go to mutmut's worker processes instead.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM"):
        env[var] = "1"
    return env


def check_import(dest: Path, env: dict[str, str]) -> None:
    """Refuse to run when the copy would test /work/main's sage_ros instead of its own."""
    out = subprocess.run(
        [sys.executable, "-c", "import sage_ros; print(sage_ros.__file__)"],
        cwd=dest, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()
    if not Path(out).resolve().is_relative_to(dest.resolve()):
        raise SystemExit(f"the copy imports sage_ros from {out}, not from {dest}: refusing to mutate")


def parse_results(text: str) -> dict[str, str]:
    """`mutmut results --all true` lines ('    name: status') -> {name: status}."""
    out = {}
    for line in text.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            out[name] = status
    return out


def diff_of(dest: Path, env: dict[str, str], name: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name], cwd=dest, env=env, capture_output=True, text=True
    ).stdout


def run_module(key: str, module: Module, args: argparse.Namespace) -> dict:
    dest = args.work / key
    started = time.monotonic()
    make_copy(dest, module, args.snapshot, args.overlay)
    write_config(dest, module, args.timeout_multiplier)
    env = child_env(dest)
    check_import(dest, env)
    log = dest / "mutmut.log"
    print(f"[{key}] mutating {module.path} in {dest} (log: {log})", flush=True)
    with open(log, "w") as fh:
        rc = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)],
            cwd=dest, env=env, stdout=fh, stderr=subprocess.STDOUT,
        ).returncode
    if rc != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"mutmut run failed (exit {rc}); end of {log}:\n{tail}")
    listing = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=dest, env=env, capture_output=True, text=True, check=True,
    ).stdout
    statuses = parse_results(listing)
    equivalent = []
    for name, (fragment, _reason) in module.equivalent.items():
        if statuses.get(name) in DETECTED:
            continue  # now killed: nothing to exclude
        if name in statuses and fragment in diff_of(dest, env, name):
            equivalent.append(name)
        else:
            print(f"[{key}] listed equivalent {name} not found as expected (renumbered?): counted", flush=True)
    counts: dict[str, int] = {}
    for name, status in statuses.items():
        if name not in equivalent:
            counts[status] = counts.get(status, 0) + 1
    total = sum(counts.values())
    detected = sum(counts.get(s, 0) for s in DETECTED)
    survivors = sorted(n for n, s in statuses.items() if s not in DETECTED and n not in equivalent)
    result = {
        "module": module.path,
        "total": total,
        "killed": counts.get("killed", 0),
        "timeout": counts.get("timeout", 0),
        "segfault": counts.get("segfault", 0),
        "survived": counts.get("survived", 0),
        "no_tests": counts.get("no tests", 0),
        "other": {s: c for s, c in counts.items() if s not in (*DETECTED, "survived", "no tests")},
        "equivalent_excluded": len(equivalent),
        "score": round(100.0 * detected / total, 1) if total else 0.0,
        "score_all": round(100.0 * detected / (total + len(equivalent)), 1) if total else 0.0,
        "seconds": round(time.monotonic() - started),
        "survivors": survivors,
    }
    if args.show:
        for name in survivors:
            print(f"--- {statuses[name]}: {name}\n{diff_of(dest, env, name)}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"any of {', '.join(MODULES)} (default: all)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sage_mutation",
                        help="where the private copies go (default: %(default)s)")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutant runs (default: 2)")
    parser.add_argument("--snapshot", default="worktree",
                        help="'worktree' (default) or a git revision such as HEAD (see make_copy)")
    parser.add_argument("--timeout-multiplier", type=float, default=15.0,
                        help="mutmut's timeout: this many times the clean run's test time (default: 15)")
    parser.add_argument("--no-overlay", dest="overlay", action="store_false",
                        help="with a git revision: measure that commit as it is (e.g. the score before new tests)")
    parser.add_argument("--show", action="store_true", help="print the diff of every surviving mutant")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.work = args.work.resolve()
    if args.work.is_relative_to(REPO):
        parser.error("--work must be outside the repository (mutmut rewrites files there)")
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    keys = args.modules or list(MODULES)
    if importlib.util.find_spec("mutmut") is None:
        parser.error(f"mutmut is not installed: {sys.executable} -m pip install mutmut==3.8.1")
    results = []
    failed = []
    for key in keys:
        try:
            results.append(run_module(key, MODULES[key], args))
        except RuntimeError as exc:  # one module's broken copy must not cost the others' results
            print(f"[{key}] {exc}", flush=True)
            failed.append(key)
            continue
        r = results[-1]
        print(f"[{key}] {r['score']:.1f} % detected ({r['killed']} killed, {r['timeout']} timeout, "
              f"{r['segfault']} crashed, {r['survived']} survived, {r['no_tests']} no tests, of {r['total']}; "
              f"{r['equivalent_excluded']} equivalent excluded, {r['score_all']:.1f} % with them) "
              f"in {r['seconds']} s", flush=True)
    print()
    print(f"{'module':34} {'killed':>6} {'timeout':>7} {'crashed':>7} {'survived':>8} {'no tests':>8} "
          f"{'equiv.':>6} {'total':>5} {'score':>7}")
    for r in results:
        print(f"{r['module']:34} {r['killed']:6} {r['timeout']:7} {r['segfault']:7} {r['survived']:8} "
              f"{r['no_tests']:8} {r['equivalent_excluded']:6} {r['total']:5} {r['score']:6.1f}%")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
