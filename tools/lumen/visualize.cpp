// lumen visualize: activation maximisation for a class or a unit; writes the image and the score curve.
#include "commands.h"

#include <lumen/report.h>

#include <lumen/error.h>
#include <lumen/image.h>
#include <lumen/model.h>
#include <lumen/output.h>
#include <lumen/visualize.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>

namespace lumen::cli {

Command add_visualize(CLI::App& app) {
  auto* sub = app.add_subcommand("visualize", "Activation maximisation: the input a class or a unit responds to most");
  struct Args {
    std::string model, card, out = "lumen-visualize";
    std::vector<int> size;
    Runtime runtime;
    VisualizeOptions v;
  };
  auto a = std::make_shared<Args>();
  add_model_flag(sub, a->model);
  sub->add_option("--card", a->card, "model card JSON: input size, mean/std, colour order, labels");
  sub->add_option("--class,-c", a->v.cls, "class to visualise (its logit)");
  sub->add_option("--layer,-l", a->v.layer, "layer of the unit to visualise (with --channel)");
  sub->add_option("--channel", a->v.channel, "channel of --layer");
  sub->add_option("--steps", a->v.steps, "gradient-ascent steps (200)")->check(CLI::Range(1, 1000000));
  sub->add_option("--lr", a->v.lr, "step size (0.05)");
  sub->add_option("--l2", a->v.l2, "class objective: lambda of -lambda ||x||^2 (1e-4)");
  sub->add_option("--rho", a->v.rho, "unit objective: the input norm ||x|| (default sqrt(numel)/2)");
  sub->add_option("--jitter", a->v.jitter, "random shift in pixels before each step (4; 0 off)");
  sub->add_option("--blur-every", a->v.blur_every, "Gaussian blur every N steps (4; 0 off)");
  sub->add_option("--blur-sigma", a->v.blur_sigma, "blur sigma in pixels (0.5)");
  sub->add_option("--tv", a->v.tv, "total-variation penalty weight (0)");
  sub->add_option("--seed", a->v.seed, "seed of the start image and the jitter (0)");
  sub->add_option("--input-size", a->size, "model input H W (overrides the card)")->expected(2);
  sub->add_option("--out,-o", a->out, "output directory (default lumen-visualize)")->check(output_folder());
  add_runtime_flags(sub, a->runtime, false);
  return {sub, [a] {
            a->runtime.apply();
            Preprocess pre;
            std::vector<std::string> labels;
            if (!a->card.empty()) {
              auto card = load_card(a->card);
              pre = card.preprocess;
              labels = card.labels;
            }
            if (a->size.size() == 2) pre.height = a->size[0], pre.width = a->size[1];
            Model model = Model::load(a->model);
            OutputDir out(a->out);
            VisualizeOptions o = a->v;
            auto score = std::make_shared<double>(0);
            const Progress steps = progress_printer(a->runtime.quiet, [score] { return "score " + std::to_string(*score); });
            o.progress = [&, score](int step, double value) {
              *score = value;
              steps("steps", step, o.steps);
            };
            auto v = visualize(model, pre, o);
            const std::string what = a->v.layer.empty() ? "class-" + std::to_string(a->v.cls)
                                                         : safe_name(a->v.layer) + ".channel-" + std::to_string(a->v.channel);
            nlohmann::json curve = {{"objective", a->v.layer.empty() ? "logit of class " + std::to_string(a->v.cls)
                                                                       : "mean activation of " + a->v.layer + " channel " +
                                                                             std::to_string(a->v.channel)},
                                    {"initial", v.initial}, {"final", v.final}, {"increase", v.final - v.initial},
                                    {"scores", v.scores}, {"top1", v.top1}, {"lumen_version", lumen::version()}};
            out.write(what + ".png", encode_png(to_image(v.input, pre)));
            out.write(what + ".npy", encode_npy([&] {
                        auto t = v.input[0].permute({1, 2, 0}).contiguous();
                        cv::Mat m(static_cast<int>(t.size(0)), static_cast<int>(t.size(1)), CV_32FC3);
                        std::memcpy(m.data, t.data_ptr<float>(), sizeof(float) * static_cast<size_t>(t.numel()));
                        return m;
                      }()));
            out.write(what + ".curve.json", curve.dump(2) + "\n");
            // The same curve drawn, for a person to look at.
            report::Plot plot;
            plot.title = curve["objective"].get<std::string>() + " over the optimisation";
            plot.x_label = "step";
            plot.y_label = a->v.layer.empty() ? "logit" : "mean activation";
            report::Series series;
            series.name = "objective";
            for (size_t k = 0; k < v.scores.size(); ++k) series.x.push_back(static_cast<double>(k)), series.y.push_back(v.scores[k]);
            plot.series.push_back(series);
            out.write(what + ".curve.svg", report::svg_plot(plot));
            out.commit();
            std::cout << curve["objective"].get<std::string>() << ": " << v.initial << " -> " << v.final << " (increase "
                      << v.final - v.initial << ") in " << o.steps << " steps\n";
            if (v.top1 >= 0)
              std::cout << "top-1 class of the result: " << v.top1
                        << (v.top1 < static_cast<int64_t>(labels.size()) ? " " + labels[v.top1] : "") << "\n";
            std::cout << "wrote " << a->out << "/" << what << ".png, .npy (model input), .curve.json\n";
            return 0;
          }};
}

}  // namespace lumen::cli
