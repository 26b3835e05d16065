// A libFuzzer target over the event decoder (`scripts/fuzz`), and a plain replay tool.
//
// Built by `scripts/fuzz` with `-sanitize=fuzzer -DFUZZING`: the top-level code below hands
// control to libFuzzer (`LLVMFuzzerRunDriver`), which calls ``fuzzOneInput(_:_:)`` with
// generated inputs. SwiftPM names every executable's entry point `<module>_main` and points
// `main` at it by a linker alias, which overrides libFuzzer's own `main`; that is why the
// driver is started from here rather than by libFuzzer's `main`.
//
// In an ordinary build (no sanitizer) it is a small tool that runs the same checks over files:
// `DecoderFuzzer FILE|DIR...` prints each input's outcome, so a crash file the fuzzer saved
// can be replayed under a debugger, and the target always compiles and links with the package.
import Foundation
@_spi(Fuzzing) import ReplicationCore

/// One input: the decoder must return (no trap, no hang) and its answer must respect the
/// contract — a failure carries one of the documented reasons and a short, single-line message;
/// a success satisfies every limit of docs/events.md. Decoding is deterministic, and the two
/// parsers (the fast path and Foundation) reach the same decision on every input both take.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    let result = EventDecoder.decode(bytes)
    switch result {
    case .failure(let error):
        precondition(EventDecoder.reasons.contains(error.reason), "undocumented reason \(error.reason)")
        precondition(!error.message.isEmpty && error.message.count <= 300, "message of \(error.message.count) characters")
        precondition(!error.message.contains("\n"), "multi-line message")
    case .success(let event):
        let session = event.sessionID.utf8
        precondition(!session.isEmpty && session.count <= EventDecoder.maxIdentifierBytes && !session.contains(0))
        let origin = event.originRegion.utf8
        precondition(!origin.isEmpty && origin.count <= EventDecoder.maxIdentifierBytes && !origin.contains(0))
        switch event {
        case .messageUpserted(let u):
            precondition(u.version >= 1)
            precondition(u.content.utf8.count <= EventDecoder.maxContentBytes && !u.content.utf8.contains(0))
        case .messageDeleted(let d):
            precondition(d.version >= 1)
        case .sessionDeleted:
            break
        }
    }
    precondition(EventDecoder.decode(bytes) == result, "decoding is not deterministic")
    // One decoding truth: where the fast path takes an input, Foundation's path must reach the
    // same decision — accept with an equal event, or reject (each with its documented reason).
    if let both = EventDecoder.decodeOnBothPaths(bytes) {
        switch (both.fast, both.foundation) {
        case (.success(let a), .success(let b)):
            precondition(a == b, "the fast path and Foundation decode different events: \(a) vs \(b)")
        case (.failure, .failure):
            break
        case (.success(let a), .failure(let e)):
            preconditionFailure("the fast path accepts (\(a)), Foundation rejects: \(e)")
        case (.failure(let e), .success(let b)):
            preconditionFailure("the fast path rejects (\(e)), Foundation accepts: \(b)")
        }
    }
    return 0
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput))
#else
var files: [String] = []
for argument in CommandLine.arguments.dropFirst() {
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: argument, isDirectory: &isDirectory), isDirectory.boolValue {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: argument)) ?? []
        files += names.sorted().map { argument + "/" + $0 }
    } else {
        files.append(argument)
    }
}
if files.isEmpty {
    FileHandle.standardError.write(Data("usage: DecoderFuzzer FILE|DIR... (build with scripts/fuzz to fuzz)\n".utf8))
    exit(64)
}
for path in files {
    guard let data = FileManager.default.contents(atPath: path) else {
        FileHandle.standardError.write(Data("cannot read \(path)\n".utf8))
        exit(66)
    }
    _ = data.withUnsafeBytes { fuzzOneInput($0.bindMemory(to: UInt8.self).baseAddress, data.count) }
    let both = EventDecoder.decodeOnBothPaths(Array(data)) == nil ? "" : " (fast path and Foundation agree)"
    switch EventDecoder.decode(Array(data)) {
    case .success: print("\(path): ok\(both)")
    case .failure(let error): print("\(path): \(error)\(both)")
    }
}
#endif
