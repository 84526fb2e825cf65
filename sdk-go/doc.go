// Package stackshift is the Go SDK for StackShift durable jobs.
package stackshift
