#!/usr/bin/python3
"""`lensgrid pull` and `--model NAME` end to end against a fake Hugging Face Hub on loopback
(fake_hub.py: the Hub's URL layout and headers, a redirect to a CDN on another port, Range, LFS
sha256, a private repo). The checkpoint is a random GPT-2-layout one written by the independent
reference (tests/reference/hf_gpt2.py).

usage: hub_pull_test.py LENSGRID_BINARY [LENSGRID_WORKER_BINARY]
"""
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from fake_hub import FakeHub  # noqa: E402
from safetensors_np import read_safetensors  # noqa: E402

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
REFERENCE = os.path.join(SOURCE_DIR, "tests", "reference", "hf_gpt2.py")
EMBEDDED = os.path.join(SOURCE_DIR, "models", "lensgrid-tiny")
LENSGRID = WORKER = None
TOKEN = "hf_lensgridTESTtoken_s3cr3t"
MAIN, V1 = "1" * 40, "2" * 40
REPO, PRIVATE, EMBEDDED_REPO = "lensgrid-test/tiny", "lensgrid-private/tiny", "lensgrid-test/embedded"
SHARDED = "lensgrid-test/sharded"
TOKENS = "0,5,17,300,9,4999"


def wait_for(what, predicate, timeout=120):
    deadline = time.monotonic() + timeout  # only against hangs
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class HubPullTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hub_pull_test_")
        cls.model = os.path.join(cls.tmp, "model")
        subprocess.run([sys.executable, REFERENCE, "--out", cls.model, "--n-layer", "2",
                        "--n-head", "4", "--n-embd", "64", "--vocab", "5000", "--seed", "5"],
                       check=True, capture_output=True)
        with open(os.path.join(cls.model, "model.safetensors"), "rb") as f:
            cls.weights = f.read()
        cls.sha = hashlib.sha256(cls.weights).hexdigest()
        cls.hub = FakeHub()
        cls.hub.add_repo(REPO, {"main": MAIN, "v1": V1}, cls.model)
        v1 = dict(cls.hub.repos[REPO].files)
        v1["config.json"] = v1["config.json"].replace(b"{", b'{"lensgrid_revision": "v1", ', 1)
        cls.hub.set_commit_files(REPO, V1, v1)
        cls.hub.add_repo(PRIVATE, {"main": MAIN}, cls.model, token=TOKEN)
        cls.hub.add_repo(EMBEDDED_REPO, {"main": MAIN}, EMBEDDED)
        # The same weights (same seed) as a sharded checkpoint: index + 3 shards.
        cls.sharded = os.path.join(cls.tmp, "sharded")
        subprocess.run([sys.executable, REFERENCE, "--out", cls.sharded, "--n-layer", "2",
                        "--n-head", "4", "--n-embd", "64", "--vocab", "5000", "--seed", "5",
                        "--shards", "3"], check=True, capture_output=True)
        files = {}
        for name in os.listdir(cls.sharded):
            if name == "config.json" or name.startswith("model"):
                with open(os.path.join(cls.sharded, name), "rb") as f:
                    files[name] = f.read()
        cls.hub.add_repo(SHARDED, {"main": MAIN}, files=files)
        cls.hub.renamed["old-org/tiny"] = REPO
        cls.hub.start()

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.cache = tempfile.mkdtemp(dir=self.tmp, prefix="cache_")
        self.hub.requests.clear()

    def env(self, **extra):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HF_", "HUGGING", "LENSGRID_OFFLINE"))}
        env.update({"HF_ENDPOINT": self.hub.endpoint, "HF_HUB_CACHE": self.cache})
        env.update(extra)
        return env

    def lensgrid(self, *args, **env):
        return subprocess.run([LENSGRID, *args], capture_output=True, text=True, env=self.env(**env),
                              timeout=600)

    def repo_dir(self, repo):
        return os.path.join(self.cache, "models--" + repo.replace("/", "--"))

    def test_pull_then_run_equals_run_on_the_dir(self):
        pulled = self.lensgrid("pull", REPO)
        self.assertEqual(pulled.returncode, 0, pulled.stderr)
        snapshot = pulled.stdout.strip()
        self.assertEqual(snapshot, os.path.join(self.repo_dir(REPO), "snapshots", MAIN))
        self.assertIn("sha256 verified", pulled.stderr)
        # huggingface_hub's layout: relative links into blobs/, refs/main = the commit.
        link = os.readlink(os.path.join(snapshot, "model.safetensors"))
        self.assertEqual(link, "../../blobs/" + self.sha)
        with open(os.path.join(self.repo_dir(REPO), "refs", "main")) as f:
            self.assertEqual(f.read(), MAIN)
        # The weights came from the CDN (another port), as a redirect sent them.
        self.assertTrue(any(r["server"] == "cdn" for r in self.hub.requests))
        outs = {}
        for name, model in (("dir", self.model), ("name", REPO)):
            out = os.path.join(self.tmp, "run_%s.safetensors" % name)
            run = self.lensgrid("run", "--model", model, "--tokens", TOKENS, "--output", out,
                                "--offline")
            self.assertEqual(run.returncode, 0, run.stderr)
            outs[name] = read_safetensors(out)["logits"]
        self.assertEqual(outs["dir"].tobytes(), outs["name"].tobytes())
        # A second pull asks the Hub (HEAD) and downloads nothing.
        self.hub.requests.clear()
        again = self.lensgrid("pull", REPO)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual({r["method"] for r in self.hub.requests}, {"HEAD"})

    def test_a_sharded_checkpoint_is_pulled_and_runs_as_the_same_weights_in_one_file(self):
        pulled = self.lensgrid("pull", SHARDED)
        self.assertEqual(pulled.returncode, 0, pulled.stderr)
        snapshot = pulled.stdout.strip()
        shards = sorted(n for n in os.listdir(snapshot) if n.endswith(".safetensors"))
        self.assertEqual(shards, ["model-%05d-of-00003.safetensors" % k for k in (1, 2, 3)])
        outs = {}
        for name, model in (("one_file", self.model), ("sharded", SHARDED)):
            out = os.path.join(self.tmp, "run_%s.safetensors" % name)
            run = self.lensgrid("run", "--model", model, "--tokens", TOKENS, "--output", out,
                                "--offline")
            self.assertEqual(run.returncode, 0, run.stderr)
            outs[name] = read_safetensors(out, with_metadata=True)
        self.assertEqual(outs["one_file"][0]["logits"].tobytes(),
                         outs["sharded"][0]["logits"].tobytes())
        # The identity of a sharded checkpoint, as README defines it, computed here.
        def sha(name):
            with open(os.path.join(snapshot, name), "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()
        text = "lensgrid sharded safetensors v1\n" + "".join(
            "%s %s\n" % (n, sha(n)) for n in ["model.safetensors.index.json"] + shards)
        identity = hashlib.sha256(text.encode()).hexdigest()
        self.assertEqual(outs["sharded"][1]["weights_sha256"], identity)
        self.assertEqual(outs["one_file"][1]["weights_sha256"], self.sha)

    def test_name_is_pulled_when_absent_and_a_renamed_repo_is_followed(self):
        # `run --model NAME` pulls a model the cache lacks; the old name redirects (relative).
        run = self.lensgrid("run", "--model", "old-org/tiny", "--tokens", TOKENS)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertTrue(os.path.isdir(os.path.join(self.repo_dir("old-org/tiny"), "snapshots", MAIN)))
        self.assertTrue(any(r["path"].startswith("/old-org/tiny/") for r in self.hub.requests))
        # tokenize --model NAME reads the pulled tokenizer files.
        by_name = self.lensgrid("tokenize", "--model", EMBEDDED_REPO, "Hello world")
        by_dir = self.lensgrid("tokenize", "--model", EMBEDDED, "Hello world")
        self.assertEqual(by_name.returncode, 0, by_name.stderr)
        self.assertEqual(by_name.stdout, by_dir.stdout)

    def test_a_download_killed_halfway_resumes_with_range(self):
        half = len(self.weights) // 2
        self.hub.stall_after[self.sha] = half
        self.hub.stalled.clear()
        self.hub.release.clear()
        proc = subprocess.Popen([LENSGRID, "pull", REPO], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env())
        partial = os.path.join(self.repo_dir(REPO), "blobs", self.sha + ".incomplete")
        wait_for("the server to send half", self.hub.stalled.is_set)
        wait_for("half on disk", lambda: os.path.exists(partial) and os.path.getsize(partial) == half)
        proc.kill()
        proc.communicate()
        self.hub.release.set()
        self.assertFalse(os.path.exists(os.path.join(self.repo_dir(REPO), "blobs", self.sha)))
        self.hub.requests.clear()
        again = self.lensgrid("pull", REPO)
        self.assertEqual(again.returncode, 0, again.stderr)
        cdn = [r for r in self.hub.requests if r["server"] == "cdn"]
        self.assertEqual([r["range"] for r in cdn], ["bytes=%d-" % half])
        self.assertEqual(self.hub.cdn_bytes(self.sha), len(self.weights) - half)
        self.assertIn("resuming", again.stderr)
        with open(os.path.join(again.stdout.strip(), "model.safetensors"), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), self.sha)
        self.assertFalse(os.path.exists(partial))

    def test_a_corrupted_byte_is_refused_and_nothing_is_left(self):
        self.hub.corrupt.add(self.sha)
        try:
            pulled = self.lensgrid("pull", REPO)
        finally:
            self.hub.corrupt.discard(self.sha)
        self.assertNotEqual(pulled.returncode, 0)
        self.assertIn("DATA_LOSS", pulled.stderr)
        self.assertIn("model.safetensors", pulled.stderr)
        self.assertIn(self.sha, pulled.stderr)
        bad = bytearray(self.weights)
        bad[len(bad) // 2] ^= 1
        self.assertIn(hashlib.sha256(bytes(bad)).hexdigest(), pulled.stderr)
        blobs = os.path.join(self.repo_dir(REPO), "blobs")
        self.assertEqual(glob.glob(os.path.join(blobs, self.sha + "*")), [])
        self.assertFalse(os.path.lexists(
            os.path.join(self.repo_dir(REPO), "snapshots", MAIN, "model.safetensors")))
        offline = self.lensgrid("run", "--model", REPO, "--tokens", TOKENS, "--offline")
        self.assertNotEqual(offline.returncode, 0)

    def test_private_repo_needs_the_token_which_never_shows(self):
        denied = self.lensgrid("pull", PRIVATE)
        self.assertNotEqual(denied.returncode, 0)
        self.assertIn("401", denied.stderr)
        self.assertIn(self.hub.endpoint + "/" + PRIVATE + "/resolve/main/config.json", denied.stderr)
        self.assertIn("HF_TOKEN", denied.stderr)
        self.hub.requests.clear()
        pulled = self.lensgrid("pull", PRIVATE, HF_TOKEN=TOKEN)
        self.assertEqual(pulled.returncode, 0, pulled.stderr)
        run = self.lensgrid("run", "--model", PRIVATE, "--tokens", TOKENS, HF_TOKEN=TOKEN)
        self.assertEqual(run.returncode, 0, run.stderr)
        wrong = self.lensgrid("pull", PRIVATE, HF_TOKEN="hf_wrong_" + TOKEN[::-1])
        self.assertNotEqual(wrong.returncode, 0)
        # The token went to the Hub only, never to the CDN another host serves.
        hub_auth = {r["auth"] for r in self.hub.requests if r["server"] == "hub"}
        self.assertIn("Bearer " + TOKEN, hub_auth)
        self.assertEqual({r["auth"] for r in self.hub.requests if r["server"] == "cdn"}, {None})
        # ... and never into any output or file.
        for proc in (denied, pulled, run, wrong):
            for text in (proc.stdout, proc.stderr):
                self.assertNotIn(TOKEN, text)
                self.assertNotIn(TOKEN[::-1], text)
        for root, _, files in os.walk(self.cache):
            for name in files:
                path = os.path.join(root, name)
                if os.path.isfile(path):
                    with open(path, "rb") as f:
                        self.assertNotIn(TOKEN.encode(), f.read(), path)

    def test_offline_with_an_empty_cache_fails_clearly(self):
        for args, env in (((("--offline",)), {}), ((), {"LENSGRID_OFFLINE": "1"})):
            run = self.lensgrid("run", "--model", REPO, "--tokens", TOKENS, *args, **env)
            self.assertNotEqual(run.returncode, 0)
            self.assertIn("offline", run.stderr)
            self.assertIn("--model DIR", run.stderr)
            self.assertIn("lensgrid pull " + REPO, run.stderr)
        self.assertEqual(self.hub.requests, [])
        # An unreachable Hub: the URL, the reason and the same hint.
        down = self.lensgrid("pull", REPO, HF_ENDPOINT="http://127.0.0.1:9")
        self.assertNotEqual(down.returncode, 0)
        self.assertIn("http://127.0.0.1:9/" + REPO + "/resolve/main/config.json", down.stderr)
        self.assertIn("--model DIR", down.stderr)

    def test_a_revision_is_cached_under_its_commit(self):
        pulled = self.lensgrid("pull", REPO, "--revision", "v1")
        self.assertEqual(pulled.returncode, 0, pulled.stderr)
        self.assertEqual(pulled.stdout.strip(), os.path.join(self.repo_dir(REPO), "snapshots", V1))
        with open(os.path.join(self.repo_dir(REPO), "refs", "v1")) as f:
            self.assertEqual(f.read(), V1)
        with open(os.path.join(pulled.stdout.strip(), "config.json")) as f:
            self.assertIn("lensgrid_revision", f.read())
        for model in (REPO + "@v1", REPO + "@" + V1):
            run = self.lensgrid("run", "--model", model, "--tokens", TOKENS, "--offline")
            self.assertEqual(run.returncode, 0, run.stderr)
        # main was never pulled.
        run = self.lensgrid("run", "--model", REPO, "--tokens", TOKENS, "--offline")
        self.assertNotEqual(run.returncode, 0)
        # --if-missing: cached, so no request at all.
        self.hub.requests.clear()
        again = self.lensgrid("pull", REPO + "@v1", "--if-missing")
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(self.hub.requests, [])

    @unittest.skipUnless(len(sys.argv) > 2, "no lensgrid-worker binary given")
    def test_worker_serves_a_model_by_name(self):
        self.assertEqual(self.lensgrid("pull", REPO).returncode, 0)
        proc = subprocess.Popen([WORKER, "--model", REPO, "--offline", "--listen", "127.0.0.1:0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=self.env())
        try:
            lines = []
            def serving():
                line = proc.stderr.readline()
                lines.append(line)
                return "serving" in line and "snapshots/" + MAIN in line or not line
            wait_for("the worker to load", serving)
            self.assertIn("serving", "".join(lines))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


if __name__ == "__main__":
    LENSGRID = sys.argv[1]
    if len(sys.argv) > 2:
        WORKER = sys.argv[2]
    unittest.main(argv=sys.argv[:1] + sys.argv[3:], verbosity=2)
