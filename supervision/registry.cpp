#include "supervision/registry.hpp"
