export * as pb from "./gen/stackshift/v1/jobs_pb.js";
