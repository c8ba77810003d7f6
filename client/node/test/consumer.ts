// Type-checked by package.test.mjs against dist/index.d.ts: the declarations a TypeScript user
// compiles against describe the API (a wrong option or return type fails tsc).
import { connect, connectCoordinator, program, LensgridError, Tensor, RunResult, SearchResult, JobEvent } from "lensgrid";

export async function use(address: string): Promise<number> {
  const worker = await connect(address, { token: "t", timeoutMs: 1000, waitMs: 10 });
  const ids: number[] = await worker.tokenize("Hello world");
  const many: number[][] = await worker.tokenize(["a", "b"], { prependBos: false });
  const run: RunResult = await worker.runWithCache(ids, { names: [["pattern", 0]], positions: { start: -1 }, dtype: "F16" });
  const t: Tensor = run.get("pattern0");
  const f: Float32Array = t.data as Float32Array;
  const p = program("z0");
  p.save("n", p.activation().norm(-1, { keepdim: true }));
  await worker.runWithInterventions("x", { programs: [p], metric: { kind: "logit_diff", answer: 1, wrong: [2, 3] } });
  const c = await connectCoordinator(address);
  const job = await c.submit({ model: "m", dataset: "induction", method: "ablate-heads", nPrompts: 2 });
  for await (const e of job.watch({ afterSeq: 0 })) {
    const ev: JobEvent = e;
    void ev.seq;
  }
  const r: SearchResult = await job.result();
  try {
    await worker.detokenize([1]);
  } catch (e) {
    if (e instanceof LensgridError) return e.code;
  }
  return f.length + many.length + r.ranked.length;
}
