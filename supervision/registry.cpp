#include "supervision/registry.hpp"

#include <map>

#include "caf/event_based_actor.hpp"
#include "caf/stateful_actor.hpp"

namespace snakepit::supervision {

namespace {

struct registry_entry {
  caf::actor pid;
  caf::message meta;
};

struct registry_state {
  std::map<std::string, registry_entry> names;
  static const char* name;
};

const char* registry_state::name = "snakepit_registry";

caf::behavior registry_actor(caf::stateful_actor<registry_state>* self, start_ack ack) {
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& names = self->state.names;
    for (auto i = names.begin(); i != names.end();) {
      if (i->second.pid.address() == dm.source)
        i = names.erase(i);
      else
        ++i;
    }
  });
  ack.ok(self);
  return {
    [self](register_atom, std::string& name, caf::actor& pid,
           caf::message& meta) -> caf::result<caf::ok_atom> {
      if (!pid)
        return caf::make_error(sup_errc::not_found, name);
      auto& names = self->state.names;
      if (names.count(name) != 0)
        return caf::make_error(sup_errc::already_registered, name);
      // One monitor per registration; a stale extra down_msg erases nothing.
      self->monitor(pid);
      names.emplace(std::move(name), registry_entry{std::move(pid), std::move(meta)});
      return caf::ok_atom::value;
    },
    [self](lookup_atom,
           const std::string& name) -> caf::result<caf::actor, caf::message> {
      auto& names = self->state.names;
      auto i = names.find(name);
      if (i == names.end())
        return caf::make_error(sup_errc::not_found, name);
      return {i->second.pid, i->second.meta};
    },
    [self](unregister_atom, const std::string& name) {
      self->state.names.erase(name);
      return caf::ok_atom::value;
    },
    [self](list_atom) {
      std::vector<std::string> xs;
      for (auto& kv : self->state.names)
        xs.push_back(kv.first);
      return xs;
    },
  };
}

} // namespace

caf::actor spawn_registry(caf::actor_system& sys) {
  return sys.spawn(registry_actor, start_ack{});
}

caf::actor spawn_registry(caf::local_actor* parent, start_ack ack) {
  return parent->spawn(registry_actor, std::move(ack));
}

child_spec registry_child(std::string id) {
  child_spec spec;
  spec.id = std::move(id);
  spec.start = [](caf::local_actor* parent, start_ack ack, const caf::message&) {
    return spawn_registry(parent, std::move(ack));
  };
  return spec;
}

} // namespace snakepit::supervision
