// libpq (Debian: libpq-dev, pkg-config "libpq").
#include <libpq-fe.h>
