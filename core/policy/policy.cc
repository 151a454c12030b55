#include "core/policy/policy.h"
