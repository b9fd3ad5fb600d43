#include <stddef.h>
#include <stdint.h>

/* libFuzzer's driver (compiler-rt), linked by -sanitize=fuzzer. SwiftPM gives
   an executable its own main(), so synd-fuzz's main calls the driver itself. */
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
