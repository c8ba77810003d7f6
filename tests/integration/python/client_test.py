#!/usr/bin/python3
"""The installed Python package against a real lensgrid-worker on the embedded model.

Imports lensgrid from the pip-installed DEST only (asserted), never the source tree. Each
RemoteModel method is checked against the worker's direct RPC results (lensgrid.Worker, within
1e-5), the ActivationCache helpers against their definitions written here in numpy, traced hook
functions against the same edits as the worker's declarative interventions, FactoredMatrix
against dense numpy, API-version mismatches against a fake worker.

usage: client_test.py INSTALL_DIR LENSGRID_WORKER LENSGRID SOURCE_DIR
"""
import os
import sys
import unittest
from concurrent import futures

INSTALL, WORKER_BIN, LENSGRID_BIN, SOURCE = sys.argv[1:5]
del sys.argv[1:5]
sys.path.insert(0, INSTALL)
sys.path.insert(1, os.path.join(SOURCE, "tests", "integration", "worker"))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import lensgrid  # noqa: E402
from lensgrid import trace  # noqa: E402
from lensgrid.v1 import worker_pb2, worker_pb2_grpc  # noqa: E402
from worker_harness import WorkerProcess  # noqa: E402

MODEL = os.path.join(SOURCE, "models", "lensgrid-tiny")
PROMPT = "The cat sat on the mat. The cat sat"
TOL = 1e-5


def close(a, b, tol=TOL):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=tol,
                               atol=tol)


class InstalledPackageTest(unittest.TestCase):
    def test_imports_the_installed_package(self):
        self.assertTrue(os.path.realpath(lensgrid.__file__).startswith(os.path.realpath(INSTALL)),
                        lensgrid.__file__)
        self.assertNotIn(os.path.join(SOURCE, "client", "python"), [os.path.realpath(p) for p in sys.path])
        self.assertRegex(lensgrid.__version__, r"^\d+\.\d+\.\d+")
        self.assertTrue(os.path.exists(os.path.join(os.path.dirname(lensgrid.__file__), "py.typed")))


class FactoredMatrixTest(unittest.TestCase):
    def setUp(self):
        rng = np.random.default_rng(0)
        self.A = rng.normal(size=(2, 3, 8, 4)).astype(np.float64)
        self.B = rng.normal(size=(2, 3, 4, 8)).astype(np.float64)
        self.fm = lensgrid.FactoredMatrix(self.A, self.B)
        self.dense = self.A @ self.B

    def test_against_dense_numpy(self):
        fm, dense = self.fm, self.dense
        self.assertEqual(fm.shape, dense.shape)
        close(fm.AB, dense)
        close(fm.BA, self.B @ self.A)
        close(fm.T.AB, np.swapaxes(dense, -1, -2))
        U, S, V = fm.svd()
        close(U @ (S[..., :, None] * np.swapaxes(V, -1, -2)), dense, 1e-9)
        close(S, np.linalg.svd(dense, compute_uv=False)[..., :4], 1e-9)
        close(fm.norm(), np.linalg.norm(dense, axis=(-2, -1)), 1e-9)
        ev = np.sort_complex(fm.eigenvalues[0, 0])
        dense_ev = np.linalg.eigvals(dense[0, 0])
        dense_ev = np.sort_complex(dense_ev[np.argsort(-np.abs(dense_ev))[:4]])
        close(np.abs(ev), np.abs(dense_ev), 1e-8)
        x = np.random.default_rng(1).normal(size=(8, 5))
        close((fm @ x).AB if isinstance(fm @ x, lensgrid.FactoredMatrix) else fm @ x, dense @ x, 1e-9)
        close((x.T @ fm).AB, x.T @ dense, 1e-9)
        close((fm @ fm).AB, dense @ dense, 1e-8)
        v = np.ones(8)
        close(fm @ v, dense @ v, 1e-9)
        close(fm[1].AB, dense[1])
        close(fm[1, 2].AB, dense[1, 2])
        close(fm[1, 2, 3].AB, dense[1, 2, 3:4])
        close(fm[1, 2, 3, 4].AB, dense[1, 2, 3:4, 4:5])
        close((fm * 2.0).AB, dense * 2)

    def test_composition_scores_definition(self):
        left, right = lensgrid.FactoredMatrix(self.A[0, 0], self.B[0, 0]), \
            lensgrid.FactoredMatrix(self.A[1, 1], self.B[1, 1])
        want = (np.linalg.norm(left.AB @ right.AB) /
                (np.linalg.norm(left.AB) * np.linalg.norm(right.AB)))
        close(lensgrid.composition_scores(left, right), want, 1e-9)

    def test_mismatch_is_an_error(self):
        with self.assertRaises(lensgrid.Error):
            lensgrid.FactoredMatrix(np.ones((3, 4)), np.ones((5, 3)))


class TraceTest(unittest.TestCase):
    """Tracing alone (no worker): the program recorded, and clear TraceErrors."""

    def tr(self, fn, shape=(1, 5, 4, 16)):
        return trace.trace_hook("blocks.0.attn.hook_z", fn, shape)

    def test_write_records_a_write_node(self):
        def fn(z, hook):
            self.assertEqual(hook.name, "blocks.0.attn.hook_z")
            self.assertEqual(hook.layer(), 0)
            z[:, :, 3] = 0
            return z
        p = self.tr(fn)
        kinds = [n.WhichOneof("op") for n in p.nodes]
        self.assertEqual(kinds, ["activation", "constant", "write"])
        self.assertEqual(p.output, p.nodes[-1].id)
        self.assertEqual([r.WhichOneof("kind") for r in p.nodes[-1].write.region], ["all", "all", "at"])

    def test_in_place_ops_and_none_return_change_the_activation(self):
        def fn(z, hook):
            z *= 2
        p = self.tr(fn)
        self.assertEqual(p.output, p.nodes[-1].id)
        self.assertEqual(self.tr(lambda z, hook: None).output, "")

    def test_untraceable_operations_are_named(self):
        cases = {"float(act)": lambda z, h: float(z),
                 "act.numpy()": lambda z, h: z.numpy(),
                 "truth value": lambda z, h: z if z.sum() > 0 else z,
                 "act.frobnicate": lambda z, h: z.frobnicate(),
                 "indices": lambda z, h: z.max(dim=-1).indices,
                 "more than one list": lambda z, h: z[:, [0, 1], [0, 1]],
                 "slice step": lambda z, h: z[:, ::-1],
                 "returned a str": lambda z, h: "x",
                 "returned shape": lambda z, h: z.sum(-1),
                 "out of range": lambda z, h: z[:, :, 9],
                 "hook.model": lambda z, h: h.model}
        for what, fn in cases.items():
            with self.subTest(what), self.assertRaises(lensgrid.TraceError) as cm:
                self.tr(fn)
            self.assertIn(what, str(cm.exception))
            self.assertIsInstance(cm.exception, lensgrid.Error)

    def test_numpy_and_torch_functions_trace(self):
        p = self.tr(lambda z, h: np.where(z > 0, np.exp(z), z * 0.5))
        self.assertIn("where", [n.WhichOneof("op") for n in p.nodes])
        try:
            import torch
        except ImportError:
            return
        p = self.tr(lambda z, h: torch.where(z > 0, z, torch.zeros_like(z)))
        self.assertIn("where", [n.WhichOneof("op") for n in p.nodes])


class _FakeWorker(worker_pb2_grpc.WorkerServicer):
    def __init__(self, version):
        self.version = version

    def GetModelInfo(self, request, context):
        info = worker_pb2.ModelInfo(model_dir="/m/fake", api_version=self.version)
        info.config.n_layers, info.config.n_heads, info.config.d_model = 1, 1, 4
        return info


class ApiVersionTest(unittest.TestCase):
    def serve(self, version):
        server = grpc.server(futures.ThreadPoolExecutor(2))
        worker_pb2_grpc.add_WorkerServicer_to_server(_FakeWorker(version), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.addCleanup(server.stop, None)
        return f"127.0.0.1:{port}"

    def test_other_major_is_a_clear_error(self):
        with self.assertRaises(lensgrid.ApiVersionError) as cm:
            lensgrid.connect(self.serve("3.0"))
        self.assertIn("3.0", str(cm.exception))
        self.assertIn("major", str(cm.exception))

    def test_older_minor_refuses_what_needs_newer(self):
        for version in ("1.0", ""):
            model = lensgrid.connect(self.serve(version))
            with self.assertRaises(lensgrid.ApiVersionError) as cm:
                model.run_with_hooks(np.array([[1, 2]]), fwd_hooks=[])
            self.assertIn("needs Worker API 1.1", str(cm.exception))
            model.close()

    def test_newer_minor_is_fine(self):
        lensgrid.connect(self.serve("1.7")).close()

    def test_both_majors_connect(self):
        for version in ("1.1", "2.0", "2.3"):
            lensgrid.connect(self.serve(version)).close()

    def test_unreachable_is_a_lensgrid_error(self):
        with self.assertRaises(lensgrid.Error) as cm:
            lensgrid.connect("127.0.0.1:1", wait=0.5)
        self.assertIsNotNone(cm.exception.code)


class RemoteModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc = WorkerProcess(WORKER_BIN, MODEL, "--threads", "1")
        cls.model = lensgrid.connect(cls.proc.address, model="lensgrid-tiny")
        cls.direct = lensgrid.Worker(cls.proc.address)
        cls.v11 = cls.direct.api_version() >= (1, 1)
        cls.tokens = cls.model.to_tokens(PROMPT)
        cls.logits, cls.cache = cls.model.run_with_cache(PROMPT)

    @classmethod
    def tearDownClass(cls):
        cls.model.close()
        cls.direct.close()
        cls.proc.stop()

    def need_v11(self, what):
        if not self.v11:
            self.skipTest(f"{what}: the worker speaks Worker API {self.model.cfg.api_version or '1.0'}"
                          ", needs 1.1 (hook programs, GetWeights)")

    def weights_or_skip(self):
        self.need_v11("weights")
        try:
            return self.model.weights()
        except lensgrid.WorkerError as e:
            if e.code == grpc.StatusCode.UNIMPLEMENTED:
                self.skipTest("the worker has no GetWeights yet (UNIMPLEMENTED)")
            raise

    def test_cfg(self):
        info = self.direct.model_info().config
        cfg = self.model.cfg
        for f in ("n_layers", "n_heads", "d_model", "d_head", "d_mlp", "n_ctx", "d_vocab", "act_fn"):
            self.assertEqual(getattr(cfg, f), getattr(info, f), f)
        self.assertEqual(cfg.normalization_type, "LNPre")  # processed, as from_pretrained

    def test_model_id_mismatch(self):
        with self.assertRaises(lensgrid.Error) as cm:
            lensgrid.connect(self.proc.address, model="gpt2-xl")
        self.assertIn("gpt2-xl", str(cm.exception))

    def test_tokens(self):
        m = self.model
        ids = self.direct.tokenize(PROMPT)
        self.assertEqual(self.tokens.shape, (1, len(ids)))
        self.assertEqual(self.tokens.dtype, np.int64)
        self.assertEqual(self.tokens[0].tolist(), ids)
        self.assertEqual(self.tokens[0, 0], m.cfg.bos_token_id)
        self.assertEqual(m.to_tokens(PROMPT, prepend_bos=False)[0].tolist(), ids[1:])
        batch = m.to_tokens([PROMPT, "The cat"])
        self.assertEqual(batch.shape, (2, len(ids)))
        self.assertTrue((batch[1, len(self.direct.tokenize("The cat")):] == m.cfg.eos_token_id).all())
        strs = m.to_str_tokens(PROMPT)
        self.assertEqual(strs, self.direct.to_str_tokens(PROMPT))
        self.assertEqual(m.to_str_tokens(self.tokens), strs)
        self.assertEqual(m.to_str_tokens(self.tokens[0]), strs)
        self.assertEqual(m.to_string(self.tokens[0, 1:]), PROMPT)
        self.assertEqual(m.to_string(self.tokens[:, 1:]), [PROMPT])
        tok = m.to_single_token(" c")
        self.assertEqual(m.to_str_tokens(np.array([tok])), [" c"])
        self.assertEqual(m.get_token_position(" c", PROMPT), strs.index(" c"))
        self.assertEqual(m.get_token_position(" c", PROMPT, mode="last"),
                         len(strs) - 1 - strs[::-1].index(" c"))
        with self.assertRaises(lensgrid.Error):
            m.to_single_token("The cat sat")

    def test_forward_equals_the_worker(self):
        direct = self.direct.run_with_cache(PROMPT, names=[], return_type="both")
        close(self.model(PROMPT), direct.logits)
        close(self.model(self.tokens), direct.logits)
        close(self.model(PROMPT, return_type="loss"), direct.loss)
        logits, loss = self.model(PROMPT, return_type="both")
        close(logits, direct.logits)
        close(loss, direct.loss)
        self.assertIsNone(self.model(PROMPT, return_type=None))
        per_tok = self.model(PROMPT, return_type="loss", loss_per_token=True)
        self.assertEqual(per_tok.shape, (1, self.tokens.shape[1] - 1))
        close(per_tok.mean(), direct.loss)

    def test_run_with_cache_is_a_tuple(self):
        out = self.model.run_with_cache(PROMPT, names_filter="blocks.0.attn.hook_pattern")
        self.assertIsInstance(out, tuple)
        logits, cache = out
        self.assertIsInstance(cache, lensgrid.ActivationCache)
        direct = self.direct.run_with_cache(PROMPT)
        close(logits, direct.logits)
        close(self.logits, direct.logits)
        self.assertEqual(sorted(self.cache.keys()), sorted(direct.keys()))
        self.assertEqual(sorted(self.cache.keys()), sorted(self.model.hook_points()))
        for k in direct:
            close(self.cache[k], direct[k])
        close(cache["pattern", 0, "attn"], direct["blocks.0.attn.hook_pattern"])
        self.assertEqual(list(cache.keys()), ["blocks.0.attn.hook_pattern"])

    def test_names_filter_forms_and_negative_layers(self):
        n = self.model.cfg.n_layers
        _, c = self.model.run_with_cache(PROMPT, names_filter=["resid_post1", "blocks.0.hook_resid_pre"])
        self.assertEqual(sorted(c.keys()), ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"])
        _, c = self.model.run_with_cache(PROMPT, names_filter=lambda name: name.endswith("hook_pattern"))
        self.assertEqual(sorted(c.keys()), [f"blocks.{l}.attn.hook_pattern" for l in range(n)])
        close(self.cache["resid_post", -1], self.cache[f"blocks.{n - 1}.hook_resid_post"])
        close(self.cache["pattern", -n, "attn"], self.cache["blocks.0.attn.hook_pattern"])
        close(self.cache["resid_pre", 0], self.cache["blocks.0.hook_resid_pre"])
        self.assertIn(("resid_post", -1), self.cache)

    def test_stop_at_layer_and_remove_batch_dim(self):
        _, c = self.model.run_with_cache(PROMPT, names_filter=lambda name: "resid" in name,
                                         stop_at_layer=1, return_type=None)
        self.assertIn("blocks.0.hook_resid_post", c.keys())
        self.assertNotIn("blocks.1.hook_resid_pre", c.keys())
        _, c = self.model.run_with_cache(PROMPT, names_filter="pattern0", remove_batch_dim=True)
        close(c["pattern", 0], self.cache["pattern", 0][0])
        r = self.cache.remove_batch_dim()
        close(r["resid_post", -1], self.cache["resid_post", -1][0])
        self.assertFalse(r.has_batch_dim)

    def test_accumulated_and_decomposed_resid_by_definition(self):
        c, n = self.cache, self.model.cfg.n_layers
        acc, labels = c.accumulated_resid(return_labels=True)
        want = [c[f"blocks.{l}.hook_resid_pre"] for l in range(n)] + [c[f"blocks.{n - 1}.hook_resid_post"]]
        close(acc, np.stack(want))
        self.assertEqual(labels, [f"{l}_pre" for l in range(n)] + ["final_post"])
        if "blocks.0.hook_resid_mid" in c.keys():  # attention-only models have no resid_mid
            acc1, labels1 = c.accumulated_resid(layer=1, incl_mid=True, return_labels=True)
            self.assertEqual(labels1, ["0_pre", "0_mid", "1_pre"])
            close(acc1[1], c["blocks.0.hook_resid_mid"])
        acc1, labels1 = c.accumulated_resid(layer=1, return_labels=True)
        self.assertEqual(labels1, ["0_pre", "1_pre"])
        parts, labels = c.decompose_resid(return_labels=True)
        expect_labels = ["embed", "pos_embed"] + sum(
            ([f"{l}_attn_out"] + ([] if self.model.cfg.attn_only else [f"{l}_mlp_out"])
             for l in range(n)), [])
        self.assertEqual(labels, expect_labels)
        # the parts sum to the final residual stream
        close(parts.sum(0), c["resid_post", -1], 1e-4)
        last = c.decompose_resid(pos_slice=-1)
        close(last, parts[:, :, -1])
        # LayerNorm applied: centred, divided by the cached final scale; sums to hook_normalized
        scale = c["ln_final.hook_scale"]
        normed = c.apply_ln_to_stack(parts, layer=-1)
        close(normed, (parts - parts.mean(-1, keepdims=True)) / scale)
        close(normed.sum(0), c["ln_final.hook_normalized"], 1e-4)
        # the logit lens: each accumulated state through the final LayerNorm, on its own
        acc_ln = c.accumulated_resid(apply_ln=True)
        x = acc - acc.mean(-1, keepdims=True)
        close(acc_ln, x / np.sqrt((x * x).mean(-1, keepdims=True) + self.model.cfg.eps), 1e-4)
        close(acc_ln[-1], c["ln_final.hook_normalized"], 1e-4)
        # into layer 1's attention: ln1's cached scale of that layer
        dec1 = c.decompose_resid(layer=1, apply_ln=True)
        p1 = c.decompose_resid(layer=1)
        close(dec1, (p1 - p1.mean(-1, keepdims=True)) / c["blocks.1.ln1.hook_scale"])

    def test_stack_activation(self):
        c, n = self.cache, self.model.cfg.n_layers
        close(c.stack_activation("pattern"), np.stack([c["pattern", l] for l in range(n)]))
        close(c.stack_activation("resid_post", layer=1), c["resid_post", 0][None])

    def test_torch(self):
        try:
            import torch
        except ImportError:
            self.skipTest("torch is not importable")
        t = self.cache.to("torch")
        self.assertIsInstance(t["resid_post", -1], torch.Tensor)
        close(t["resid_post", -1].numpy(), self.cache["resid_post", -1])
        m = lensgrid.connect(self.proc.address, return_torch=True)
        logits, cache = m.run_with_cache(PROMPT, names_filter="pattern0")
        self.assertIsInstance(logits, torch.Tensor)
        self.assertIsInstance(cache["pattern", 0], torch.Tensor)
        m.close()

    def test_bad_input_is_a_lensgrid_error_with_the_grpc_code(self):
        with self.assertRaises(lensgrid.Error) as cm:
            self.model(np.array([[1, 2, 10 ** 6]]))
        self.assertEqual(cm.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertTrue(cm.exception.details)
        with self.assertRaises(lensgrid.WorkerError) as cm:
            self.direct.run_with_cache(PROMPT, names=["blocks.0.hook_nonsense"])
        self.assertEqual(cm.exception.code, grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(lensgrid.Error) as cm:
            self.model.run_with_cache(PROMPT, names_filter="blocks.0.hook_nonsense")
        with self.assertRaises(lensgrid.Error):
            self.model(PROMPT, return_type="everything")

    # ---- traced hooks vs the worker's declarative interventions
    def traced(self, hooks, tokens=None, **kw):
        """The traced programs run through Worker.run_with_interventions (any worker that runs
        programs), and through run_with_hooks when the worker says 1.1."""
        tokens = self.tokens if tokens is None else tokens
        programs = self.model.trace(hooks, tokens)
        got = self.direct.run_with_interventions(tokens, programs=programs, return_type="both", **kw)
        if self.v11 and not kw:
            logits, loss = self.model.run_with_hooks(tokens, fwd_hooks=hooks, return_type="both")
            close(logits, got.logits)
            close(loss, got.loss)
        return got

    def test_traced_hooks_equal_interventions(self):
        hz = "blocks.0.attn.hook_z"
        clean = self.cache

        def zero_head(z, hook):
            z[:, :, 1] = 0
            return z
        want = self.direct.run_with_interventions(
            self.tokens, [{"hook": hz, "head": 1, "op": "zero"}], return_type="both")
        got = self.traced([(hz, zero_head)])
        close(got.logits, want.logits)
        self.assertGreater(np.abs(want.loss - self.model(self.tokens, return_type="loss")), 1e-6)

        def scale_resid(x, hook):
            return x * 0.5
        want = self.direct.run_with_interventions(
            self.tokens, [{"hook": "blocks.1.hook_resid_pre", "op": "scale", "scale": 0.5}])
        close(self.traced([("resid_pre1", scale_resid)]).logits, want.logits)

        vec = np.linspace(-1, 1, self.model.cfg.d_model).astype(np.float32)

        def add_last(x, hook):
            x[:, -1] += vec
        want = self.direct.run_with_interventions(
            self.tokens, [{"hook": "blocks.1.hook_resid_pre", "positions": [-1], "op": "add",
                           "value": vec}])
        close(self.traced([("blocks.1.hook_resid_pre", add_last)]).logits, want.logits)

        # patching head 2 of layer 1's z from another prompt's cache (a closure over numpy)
        other = self.tokens.copy()
        other[0, 3] = self.model.to_single_token(" m")
        _, other_cache = self.model.run_with_cache(other, names_filter="z1")

        def patch(z, hook):
            z[:, :, 2] = other_cache[hook.name][:, :, 2]
            return z
        want = self.direct.run_with_interventions(
            self.tokens, [{"hook": "blocks.1.attn.hook_z", "head": 2, "op": "patch"}],
            patch_input=other, return_type="both")
        close(self.traced([("blocks.1.attn.hook_z", patch)]).logits, want.logits)

        # two hooks, a name filter, and arithmetic that is the identity
        def ident(x, hook):
            return ((x * 2 + 1) - 1) / 2
        got = self.traced([(lambda name: name.endswith("hook_resid_post"), ident)])
        close(got.logits, self.logits, 1e-4)
        del clean

    def test_observe_only_hooks_return_saved_values(self):
        """TransformerLens's `store[hook.name] = act.norm(dim=-1)`: a lensgrid.Store and
        lensgrid.save() become program saves; the values equal the same computations by hand on
        run_with_cache's activations, and the run's output is unchanged."""
        store = lensgrid.Store()

        def norms(resid, hook):
            store[hook.name] = resid.norm(dim=-1)

        def last_query(pattern, hook):
            lensgrid.save(f"maxattn{hook.layer()}", pattern[:, :, -1].amax(dim=-1))
            lensgrid.save(f"mean{hook.layer()}", pattern.mean(dim=(-1, -2)))

        hooks = [(lambda name: name.endswith("hook_resid_post"), norms),
                 ("blocks.1.attn.hook_pattern", last_query)]
        programs = self.model.trace(hooks, self.tokens)
        self.assertTrue(all(p.output == "" for p in programs))  # observe only
        self.assertEqual(sorted(s.name for p in programs for s in p.saves),
                         ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "maxattn1",
                          "mean1"])
        loss, saved = self.model.run_with_hooks(self.tokens, fwd_hooks=hooks, return_type="loss",
                                                return_saved=True)
        close(loss, self.model(self.tokens, return_type="loss"))
        n = self.model.cfg.n_layers
        for layer in range(n):
            name = f"blocks.{layer}.hook_resid_post"
            want = np.linalg.norm(self.cache["resid_post", layer].astype(np.float64), axis=-1)
            close(store[name], want, 1e-4)
            self.assertIs(saved[name], store[name])
        pat = self.cache["pattern", 1].astype(np.float64)
        close(saved["maxattn1"], pat[:, :, -1].max(-1))
        close(saved["mean1"], pat.mean(axis=(-1, -2)))
        self.assertEqual(saved["maxattn1"].shape, (1, self.model.cfg.n_heads))

        # plain output without return_saved; an edit and a save in one function: the saved
        # value is what it computed (the activation before the edit), the edit still applies
        before = lensgrid.Store()

        def save_then_zero(z, hook):
            before["z"] = z[:, :, 1] * 1.0
            z[:, :, 1] = 0
            return z
        logits = self.model.run_with_hooks(self.tokens, fwd_hooks=[("z0", save_then_zero)])
        want = self.direct.run_with_interventions(
            self.tokens, [{"hook": "blocks.0.attn.hook_z", "head": 1, "op": "zero"}])
        close(logits, want.logits)
        close(before["z"], self.cache["z", 0][:, :, 1])

        # names are unique within a run, and only traced values are saved
        with self.assertRaises(lensgrid.TraceError) as cm:
            self.model.run_with_hooks(self.tokens, fwd_hooks=[
                ("resid_post0", lambda x, h: lensgrid.save("same", x)),
                ("resid_post1", lambda x, h: lensgrid.save("same", x))])
        self.assertIn("'same'", str(cm.exception))
        with self.assertRaises(lensgrid.TraceError) as cm:
            self.model.run_with_hooks(self.tokens, fwd_hooks=[
                ("resid_post0", lambda x, h: lensgrid.save("a", np.ones(3)))])
        self.assertIn("not a traced value", str(cm.exception))

    def test_stack_head_results(self):
        self.need_v11("stack_head_results")
        c = self.model.run_with_cache(PROMPT)[1]
        stack, labels = c.stack_head_results(return_labels=True)
        n, h = self.model.cfg.n_layers, self.model.cfg.n_heads
        self.assertEqual(stack.shape, (n * h, 1, self.tokens.shape[1], self.model.cfg.d_model))
        self.assertEqual(labels[:2], ["L0H0", "L0H1"])
        # heads sum to attn_out minus b_O, per layer
        w = self.weights_or_skip()
        for l in range(n):
            close(stack[l * h:(l + 1) * h].sum(0) + w["b_O"][l], c["attn_out", l], 1e-4)
        with_rem = c.stack_head_results(incl_remainder=True)
        close(with_rem.sum(0), c["resid_post", -1], 1e-4)

    def test_weights_and_circuits(self):
        w = self.weights_or_skip()
        m, cfg = self.model, self.model.cfg
        L, H, D, Dh = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head
        self.assertEqual(m.W_E.shape, (cfg.d_vocab, D))
        self.assertEqual(m.W_pos.shape, (cfg.n_ctx, D))
        self.assertEqual(m.W_U.shape, (D, cfg.d_vocab))
        self.assertEqual(m.b_U.shape, (cfg.d_vocab,))
        for name in ("W_Q", "W_K", "W_V"):
            self.assertEqual(getattr(m, name).shape, (L, H, D, Dh))
        self.assertEqual(m.W_O.shape, (L, H, Dh, D))
        self.assertEqual(m.b_Q.shape, (L, H, Dh))
        self.assertEqual(m.b_O.shape, (L, D))
        self.assertIs(m._weights, m._weights)  # fetched once
        # embeddings: hook_embed is W_E of the tokens
        close(self.cache["hook_embed"][0], w["W_E"][self.tokens[0]])
        close(self.cache["hook_pos_embed"][0], w["W_pos"][:self.tokens.shape[1]])
        OV, QK = m.OV, m.QK
        close(OV.AB, w["W_V"] @ w["W_O"], 1e-4)
        close(QK.AB, w["W_Q"] @ np.swapaxes(w["W_K"], -1, -2), 1e-4)
        scores = m.all_composition_scores("K")
        self.assertEqual(scores.shape, (L, H, L, H))
        a, b = OV.AB[0, 1], QK.AB[1, 2].T
        want = np.linalg.norm(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
        close(scores[0, 1, 1, 2], want, 1e-4)
        self.assertEqual(scores[1, 0, 0, 0], 0)
        # logit attributions of the decomposition sum to the logit minus b_U
        tok = int(self.tokens[0, -1])
        parts = self.cache.decompose_resid()
        attrs = self.cache.logit_attrs(parts, tok)
        close(attrs.sum(0), self.logits[..., tok] - w["b_U"][tok], 1e-3)

    def test_generate(self):
        self.need_v11("generate")
        try:
            a = self.model.generate(self.tokens, max_new_tokens=4, do_sample=False)
        except lensgrid.WorkerError as e:
            if e.code == grpc.StatusCode.UNIMPLEMENTED:
                self.skipTest("the worker has no Generate yet (UNIMPLEMENTED)")
            raise
        toks = self.tokens
        for _ in range(4):
            nxt = self.model(toks)[0, -1].argmax()
            toks = np.concatenate([toks, [[nxt]]], axis=1)
        self.assertEqual(a.tolist(), toks.tolist())
        s1 = self.model.generate(PROMPT, max_new_tokens=5, seed=3, temperature=1.0)
        s2 = self.model.generate(PROMPT, max_new_tokens=5, seed=3, temperature=1.0)
        self.assertIsInstance(s1, str)
        self.assertEqual(s1, s2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
