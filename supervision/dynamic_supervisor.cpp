#include "supervision/dynamic_supervisor.hpp"
