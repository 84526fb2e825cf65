// Pins the Go code generators used by sdk-gen/generate.sh. Not a library: `go install tool`
// (run by generate.sh with GOBIN=sdk-gen/.bin) builds protoc-gen-go and protoc-gen-go-grpc
// at exactly these versions.
module github.com/stackshift/stackshift/sdk-gen

go 1.25.0

tool (
	google.golang.org/grpc/cmd/protoc-gen-go-grpc
	google.golang.org/protobuf/cmd/protoc-gen-go
)

require (
	google.golang.org/grpc/cmd/protoc-gen-go-grpc v1.6.2 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
