// The status page's embedded files (assets.cc).
#ifndef UPKEEP_CONTROLLER_HTTP_ASSETS_H_
#define UPKEEP_CONTROLLER_HTTP_ASSETS_H_

namespace upkeep::controller {

extern const char kIndexHtml[];
extern const char kAppCss[];
extern const char kAppJs[];

}  // namespace upkeep::controller

#endif  // UPKEEP_CONTROLLER_HTTP_ASSETS_H_
