/* libFuzzer harness: feeds arbitrary bytes to the validating reader as a
 * file image. Build and run: make fuzz-run FUZZ_SECONDS=60 */
#include "statmap.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    (void)statmap_read_buffer(data, size, err, sizeof err);
    return 0;
}
