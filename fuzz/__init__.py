"""The listener's fuzzer: malformed C-STOREs and PDU abuse over real associations (see docs/fuzzing.md)."""
