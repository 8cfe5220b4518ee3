// The README's C++ snippet as a program: explain one image's top class with Grad-CAM and write the
// overlay (the map over the image, with the paper's box).
//   explain_one model.pt card.json image.jpg overlay.png [layer]
#include <lumen/lumen.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc < 5) {
    std::cerr << "usage: explain_one model.pt card.json image.jpg overlay.png [layer]\n";
    return 2;
  }
  try {
    lumen::ModelCard card = lumen::load_card(argv[2]);
    // The explainer shares the model, so a temporary is fine here.
    lumen::Explainer explainer(lumen::Model::load(argv[1]), card.preprocess, card.labels);
    lumen::ExplainOptions opt;
    opt.layers = {argc > 5 ? argv[5] : card.cam_layer};
    const cv::Mat image = lumen::read_image(argv[3]);
    const lumen::ImageExplanation result = explainer.explain({image}, opt).at(0);
    const lumen::Map& map = result.maps.at(0);
    cv::Mat picture = lumen::overlay(image, map.normalized, lumen::Colormap::Jet);
    lumen::draw_box(picture, map.box, {255, 255, 255});
    lumen::write_file_atomic(argv[4], lumen::encode_png(picture));
    std::cout << "lumen " << lumen::version() << ": " << map.method << " at " << map.layer << " for class " << map.cls << " ("
              << map.label << "), box " << map.box.x0 << "," << map.box.y0 << "," << map.box.x1 << "," << map.box.y1 << "\n";
  } catch (const lumen::Error& e) {
    std::cerr << "explain_one: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
