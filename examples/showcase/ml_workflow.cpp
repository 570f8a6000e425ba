// An ML-style workflow with numpy: load a data set (falling back when the asked-for
// one does not exist), train with streamed progress, evaluate. The data set and the
// model live in the host's session between the steps, not in Python globals.
#include "showcase.hpp"

namespace showcase {

namespace {

/// Loads "iris" (which the adapter does not have), falls back to "blobs".
bool load_data(app& a, const std::string& sid) {
  auto r = a.rt.execute_in_session(sid, "load_sample_data", {{"dataset", "iris"}});
  auto py = r ? std::nullopt : snakepit::python_error_of(r.error());
  a.ck.that(py && py->type == "DataNotFoundError",
            fmt::format("'iris' is missing: {}",
                        r ? "it loaded?" : snakepit::describe(r.error())));
  fmt::print("   falling back to the synthetic 'blobs' data set\n");
  r = a.rt.execute_in_session(sid, "load_sample_data",
                              {{"dataset", "blobs"}, {"samples", 300}, {"split", 0.8}});
  if (!a.ck.ok(r, "load_sample_data(blobs)"))
    return false;
  fmt::print("   {}\n", r->result.dump());
  return a.ck.that(r->result.value("train_samples", 0) == 240 &&
                     r->result.value("test_samples", 0) == 60,
                   "300 samples split 240 / 60");
}

/// Trains with progress chunks; checks that the loss went down.
bool train(app& a, const std::string& sid) {
  std::vector<double> losses;
  json done;
  snakepit::execute_options opts;
  opts.timeout = std::chrono::seconds{30};
  auto err = a.rt.execute_in_session_stream(
    sid, "train_model", {{"epochs", 40}, {"lr", 0.5}, {"report_every", 5}},
    [&](const json& c, bool is_final) {
      if (is_final) {
        done = c;
        return true;
      }
      losses.push_back(c.value("loss", 0.0));
      fmt::print("   epoch {:>2}/{}  loss {:.4f}  accuracy {:.3f}\n", c.value("epoch", 0),
                 c.value("total_epochs", 0), c.value("loss", 0.0),
                 c.value("accuracy", 0.0));
      return true;
    },
    opts);
  if (!a.ck.that(!err, fmt::format("training stream: {}", snakepit::describe(err))))
    return false;
  a.ck.that(losses.size() == 8, fmt::format("8 progress chunks (got {})", losses.size()));
  a.ck.that(done.value("type", "") == "completed",
            fmt::format("a final 'completed' chunk: {}", done.dump()));
  return a.ck.that(losses.size() > 1 && losses.back() < losses.front(),
                   "the loss went down during training");
}

/// The model is in the host's store; evaluation and a prediction use it.
void evaluate(app& a, const std::string& sid) {
  auto model = host_state(a.rt, sid, "ml:model");
  a.ck.that(model && (*model)["W"].size() == 4 && (*model)["W"][0].size() == 3,
            "the trained model (4 x 3 weights) is in the host's session store");
  auto r = a.rt.execute_in_session(sid, "evaluate_model");
  if (!a.ck.ok(r, "evaluate_model"))
    return;
  auto& res = r->result;
  fmt::print("   accuracy {:.3f} on {} test samples [{}]\n", res.value("accuracy", 0.0),
             res.value("test_samples", 0), r->worker_id);
  for (size_t i = 0; i < res["confusion"].size(); ++i)
    fmt::print("   {:>11} {}\n", res["labels"][i].get<std::string>(),
               res["confusion"][i].dump());
  a.ck.that(res.value("accuracy", 0.0) >= 0.85, "test accuracy >= 0.85");
  auto c = a.rt.execute_in_session(sid, "classify", {{"features", {5.0, 3.4, 1.5, 0.2}}});
  a.ck.that(c && c->result.value("class", -1) == 0,
            "a setosa-like flower is classified as class 0");
}

} // namespace

void run_ml(app& a) {
  section("ML workflow (numpy): load, train with progress, evaluate");
  auto sid = new_session(a, "ml");
  if (!sid)
    return;
  if (load_data(a, *sid) && train(a, *sid))
    evaluate(a, *sid);
  drop_session(a, *sid);
}

} // namespace showcase
