"""The C++ rules that Bazel 4.2's own BUILD files load from @rules_cc.

The real rules_cc 0.0.x defs.bzl wraps the very same native rules, so
re-exporting them is all that loading needs. Nothing in painless_tf builds C++.
"""

cc_binary = native.cc_binary
cc_import = native.cc_import
cc_library = native.cc_library
cc_proto_library = native.cc_proto_library
cc_shared_library = getattr(native, "cc_shared_library", None)
cc_test = native.cc_test
cc_toolchain = native.cc_toolchain
cc_toolchain_suite = native.cc_toolchain_suite
fdo_prefetch_hints = native.fdo_prefetch_hints
fdo_profile = native.fdo_profile
objc_import = native.objc_import
objc_library = native.objc_library
