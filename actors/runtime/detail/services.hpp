// The services a runtime is made of, in start order (OTP's application start order;
// Seastar's service start()/stop()). `runtime::stop` stops them in reverse, which is
// the shutdown order docs/architecture.md ("Process hygiene") describes: endpoints,
// then the tree (pools drain first), the bridge, the wait for every process to exit,
// the stderr pump, the run's registry row, gRPC, telemetry, the runtime directory,
// and last the log's closing line.
#pragma once

#include "actors/runtime/detail/runtime_impl.hpp"
#include "actors/runtime/detail/service_stack.hpp"

namespace snakepit::detail {

/// Adds to `p.services`, in start order:
/// log, runtime_dir, telemetry_bus, orphan_guard, grpc_runtime, stdio_runtime,
/// process_registry, stderr_pump, process_table, bridge_server, host_adapters,
/// supervision_tree, node_links, metrics_endpoint, control_endpoint. The endpoints
/// answer from `rt`.
void add_runtime_services(runtime& rt, runtime::impl& p);

} // namespace snakepit::detail
