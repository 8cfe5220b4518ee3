// Every method lumen registers is checked against an independent reference: this test reads the
// fixture topics' manifests (scripts/fixtures/) and the registry, so that a method added without its
// reference formula fails here rather than going unchecked.
#include "common.h"

#include <set>

namespace lumen::test::references_tests {

TEST(References, EveryRegisteredMethodHasAnIndependentReference) {
  std::set<std::string> covered;
  auto from_maps = [&](const std::string& manifest, char cut) {
    const auto cases = read_json(fixture(manifest))["cases"];
    for (const auto& c : cases)
      for (const auto& [key, files] : c["maps"].items()) covered.insert(key.substr(0, key.find(cut)));
  };
  from_maps("manifest_cam.json", ':');    // "gradcam:counterfactual"
  from_maps("manifest_pixel.json", '/');  // "integrated-gradients/trapezoid"
  const auto transformers = read_json(fixture("manifest_transformers.json"));
  for (const auto& c : transformers["cases"])  // "attention-rollout/max/0.5"
    if (c.contains("attention"))
      for (const auto& [key, files] : c["attention"].items()) covered.insert(key.substr(0, key.find('/')));
  const auto variants = read_json(fixture("manifest_variants.json"))["cases"];
  for (const auto& c : variants) covered.insert(c["method"].get<std::string>());
  const auto perturbation = read_json(fixture("perturbation.json"));
  for (const auto& [key, value] : perturbation.items()) covered.insert(key);
  const auto groups = read_json(fixture("feature_groups.json")), layer = read_json(fixture("layer_methods.json"));
  for (const auto& [kind, maps] : groups["maps"].items())  // grid, slic
    for (const auto& [key, file] : maps.items()) covered.insert(key);
  for (const auto& [key, files] : layer["maps"].items()) covered.insert(key);
  const auto catalog = method_catalog();
  ASSERT_GE(catalog.size(), 21u);
  for (const auto& m : catalog)
    EXPECT_TRUE(covered.count(m.name)) << m.name << " (" << m.family << ") has no reference in scripts/fixtures/ (see docs/adding-a-method.md)";
}

// Methods that share a setting declare it alike (the registry refuses otherwise), and every setting
// has a flag, a kind and help text.
TEST(References, SettingsAreDeclaredOnceWithFlagAndHelp) {
  for (const auto& s : setting_catalog()) {
    SCOPED_TRACE(s.name);
    EXPECT_EQ(s.flag.rfind("--", 0), 0u);
    EXPECT_FALSE(s.help.empty());
    EXPECT_FALSE(s.methods.empty());
    if (s.kind == "choice") {
      EXPECT_GE(s.choices.size(), 2u);
    }
  }
}

}  // namespace lumen::test::references_tests
