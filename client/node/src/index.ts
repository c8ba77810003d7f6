// lensgrid for Node.js: TransformerLens-style runs on remote lensgrid workers, and circuit
// searches through a coordinator. See README.md.
export { LensgridError, StatusCode, statusCodeName } from "./errors";
export type { ErrorOrigin, StatusCodeName } from "./errors";
export type { ConnectionOptions, CallOptions } from "./channel";
export { Tensor, TensorAssembler, tensorFromBytes, widenF16, widenBF16 } from "./wire";
export type { DType, DataDType, TensorData, TensorInput } from "./wire";
export { actName } from "./names";
export type { HookName } from "./names";
export { program, ProgramBuilder, Value, region } from "./program";
export { programFromJSON, fromProtoJSON } from "./json";
export type { HookProgramMessage, RegionInput, AxisInput, Operand } from "./program";
export { connect, Worker, RunResult } from "./worker";
export type {
  ConnectOptions,
  ModelInfo,
  ModelConfig,
  HookInfo,
  WorkerLimits,
  ModelInputValue,
  RunWithCacheOptions,
  RunWithInterventionsOptions,
  InterventionInput,
  MetricInput,
  GradientsInput,
  CacheOptions,
  TokenizeOptions,
  GenerateOptions,
  GenerateStep,
  FloatDType,
} from "./worker";
export {
  connectCoordinator,
  Coordinator,
  Job,
  SearchResult,
  defaultMetric,
  jobSpec,
  DATASET_DEFAULT_METRICS,
  FALLBACK_METRIC,
} from "./coordinator";
export type { SearchOptions, JobEvent, JobStatus, WorkerInfo, RankedComponent, WatchOptions } from "./coordinator";
export { VERSION, WORKER_API_VERSION, SUPPORTED_MAJORS, parseApiVersion, checkApiVersion } from "./version";
