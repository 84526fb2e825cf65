/**
 * The generated messages and service descriptors of `stackshift.v1` (from proto/ by
 * `bash sdk-gen/generate.sh`), for raw access alongside `stackshift.jobs` and
 * `stackshift.workerService`.
 *
 * @module
 */
export * from "./gen/stackshift/v1/common_pb.js";
export * from "./gen/stackshift/v1/jobs_pb.js";
export * from "./gen/stackshift/v1/worker_pb.js";
export * from "./gen/stackshift/v1/events_pb.js";
export * from "./gen/stackshift/v1/observability_pb.js";
export * from "./gen/stackshift/v1/queues_pb.js";
export * from "./gen/stackshift/v1/state_pb.js";
export * from "./gen/stackshift/v1/schedules_pb.js";
export * from "./gen/stackshift/v1/triggers_pb.js";
