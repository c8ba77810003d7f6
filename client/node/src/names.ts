// TransformerLens's get_act_name for the hook names a GPT-2 has.
const BLOCK_ACTS: Record<string, string> = {
  resid_pre: "hook_resid_pre",
  resid_mid: "hook_resid_mid",
  resid_post: "hook_resid_post",
  attn_out: "hook_attn_out",
  mlp_out: "hook_mlp_out",
  q: "attn.hook_q",
  k: "attn.hook_k",
  v: "attn.hook_v",
  z: "attn.hook_z",
  pattern: "attn.hook_pattern",
  attn: "attn.hook_pattern",
  attn_scores: "attn.hook_attn_scores",
  scores: "attn.hook_attn_scores",
  result: "attn.hook_result",
  pre: "mlp.hook_pre",
  post: "mlp.hook_post",
  attn_in: "hook_attn_in",
  mlp_in: "hook_mlp_in",
};

/** A hook named as TransformerLens's cache keys: "name" or [name, layer] or [name, layer, type]. */
export type HookName = string | readonly [string, number] | readonly [string, number, string];

/**
 * ("pattern", 0) -> "blocks.0.attn.hook_pattern", ("scale", 1, "ln2") ->
 * "blocks.1.ln2.hook_scale", "z3" -> "blocks.3.attn.hook_z"; anything else unchanged
 * (full names, and the worker's own shorthands, which it resolves).
 */
export function actName(name: string, layer?: number, layerType?: string): string {
  if (layer === undefined) {
    const m = /^([a-z_]+?)(\d+)([a-z_0-9]*)$/.exec(name);
    if (m && BLOCK_ACTS[m[1]] !== undefined) {
      name = m[1];
      layer = Number(m[2]);
      layerType = m[3] || undefined;
    }
  }
  if ((name === "scale" || name === "normalized") && layer !== undefined) {
    return `blocks.${layer}.${layerType || "ln1"}.hook_${name}`;
  }
  if (BLOCK_ACTS[name] !== undefined && layer !== undefined) return `blocks.${layer}.${BLOCK_ACTS[name]}`;
  return name;
}

export function hookName(h: HookName): string {
  if (typeof h === "string") return h;
  return actName(h[0], h[1], h[2]);
}
