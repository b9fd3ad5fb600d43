#!/usr/bin/env bash
# Regenerates Sources/SyndGRPC from proto/ with protoc, protoc-gen-swift and
# protoc-gen-grpc-swift-2. The plugins are built once into .build-protogen/.
# Needs: apt-get install protobuf-compiler
set -euo pipefail
cd "$(dirname "$0")/.."
tools=.build-protogen
if [ ! -x "$tools/.build/release/protoc-gen-grpc-swift-2" ]; then
  mkdir -p "$tools"
  cat > "$tools/Package.swift" <<'PKG'
// swift-tools-version:6.1
import PackageDescription
let package = Package(
  name: "protogen",
  dependencies: [
    .package(url: "https://github.com/apple/swift-protobuf.git", exact: "1.39.0"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", exact: "2.4.1"),
  ],
  targets: []
)
PKG
  (cd "$tools" && swift build -c release --product protoc-gen-swift && swift build -c release --product protoc-gen-grpc-swift-2)
fi
bin="$tools/.build/release"
out=Sources/SyndGRPC
rm -f "$out"/*.pb.swift "$out"/*.grpc.swift
protoc --proto_path=proto \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" \
  --swift_out="$out" --swift_opt=Visibility=Public,FileNaming=DropPath \
  --grpc-swift-2_out="$out" --grpc-swift-2_opt=Visibility=Public,Client=true,Server=true,FileNaming=DropPath \
  proto/synddb/v1/sequencer.proto
echo "generated: $(ls "$out")"
