# The closing line of tools/test.sh, from cargo test's output:
#   cargo test -p kiln-boot 2>&1 | awk -f tools/summary.awk
# Skipped counts the tests cargo ignored and the tests that could not make
# their reference checks (the reference documents live beside the repository,
# in ../shared/reference/; kiln_testsupport::reference::skipped prints the
# marker, once per test). A test ignored with a reason that starts with "the
# child process" is an entry point its file's tests run in a subprocess
# (targets/tests/no_ambient_credentials.rs), not a test left out: it is not
# counted.
/^test result:/ {
    for (i = 1; i <= NF; i++) {
        if ($(i) ~ /^passed;?$/) p += $(i-1)
        if ($(i) ~ /^failed;?$/) f += $(i-1)
        if ($(i) ~ /^ignored;?$/) s += $(i-1)
    }
}
/^test .* \.\.\. ignored, the child process/ { children++ }
/^kiln-test-skipped:/ { s++ }
END { printf "\nkiln: %d passed, %d failed, %d skipped\n", p, f, s - children }
